"""`python -m tl_research.similarity_command`: the documented command, kept at its short name; the code is tl_research.cli.similarity_command."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tl_research.cli.similarity_command", run_name="__main__", alter_sys=True)
