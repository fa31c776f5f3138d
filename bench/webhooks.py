"""Webhook benchmark: the production server against a bare Flask app on the same gunicorn.

    python bench/webhooks.py --concurrency 50 --calls 2000 --redis-url redis://127.0.0.1:6379/7

is the same as `ivr bench webhooks ...`; see ivr/bench.py and docs/performance.md.
"""

from ivr.bench import webhooks_command

if __name__ == "__main__":
    webhooks_command(prog_name="bench/webhooks.py")
