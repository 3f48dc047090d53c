"""`python -m tl_research.soup`: the documented command, kept at its short name; the code is tl_research.cli.soup."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tl_research.cli.soup", run_name="__main__", alter_sys=True)
