"""``python -m mlxquant``: the same command as the ``mlxquant`` console script."""

from .entry import console

if __name__ == "__main__":
    console()
