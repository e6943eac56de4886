"""One module per `cascomp` command, each with NAME, add_parser(commands) and run(args) -> Output (see
cascomp/cli/command.py); cascomp/cli/main.py lists them in its COMMANDS table."""
