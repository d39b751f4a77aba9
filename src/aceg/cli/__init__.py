"""Command line interface: ``aceg <command>``. One module per command (see COMMANDS)."""
