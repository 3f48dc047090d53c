"""`python -m tl_research.fewshot_command`: the documented command, kept at its short name; the code is tl_research.cli.fewshot_command."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tl_research.cli.fewshot_command", run_name="__main__", alter_sys=True)
