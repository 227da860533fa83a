"""Commands as library functions: each takes exactly its CLI command's arguments (same names, same
defaults), checks them before touching its output folder, writes that folder atomically and
returns a typed result (``to_json``/``from_json``). ``inheritune.cli`` only maps arguments.
"""
