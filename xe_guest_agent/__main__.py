from .cli import main

main(prog_name="xe-guest-agent")
