"""`python -m tl_research.transferability`: the documented command, kept at its short name; the code is tl_research.cli.transferability."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tl_research.cli.transferability", run_name="__main__", alter_sys=True)
