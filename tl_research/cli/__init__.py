"""The commands: launch.py's shared flags, convert, prepare, fewshot_command, similarity_command."""
