"""Collectors read the system and return plain data; they never touch XenStore."""
