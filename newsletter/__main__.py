"""`python -m newsletter`: the same command line as the `newsletter` script."""

from newsletter.cli import main

if __name__ == "__main__":
    main()
