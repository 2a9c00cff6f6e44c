"""``python -m shmdask ...``: the same command line as the ``shmdask`` console script."""

from shmdask.cli import main

if __name__ == "__main__":
    main(prog_name="shmdask")
