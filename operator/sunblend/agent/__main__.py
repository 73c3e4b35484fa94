"""``python -m sunblend.agent``: the GPU agent without the ``sunblend`` command (see ``agent/run.py``)."""

from sunblend.agent import run

if __name__ == "__main__":
    raise SystemExit(run.main())
