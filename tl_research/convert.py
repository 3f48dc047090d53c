"""`python -m tl_research.convert`: the documented command, kept at its short name; the code is tl_research.cli.convert."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tl_research.cli.convert", run_name="__main__", alter_sys=True)
