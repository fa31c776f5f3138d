"""The step log: every step of every call, kept in SQL, and what is computed from it.

    recorder     moves the step log from its Redis stream into SQL, in batches
    leader       the Redis lease that picks one recorder per machine
    store        the SQL tables (SQLite or PostgreSQL) and their migrations
    metrics      per-call measures (waits, outcomes, time in prompts)
    reports      the figures of a period (service level, abandonment, callbacks)
    retention    deleting old calls and recordings
"""
