"""Calls, steps and recordings.

Revision ID: 0001
Revises:
Create Date: 2024-01-01
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copy of the types at this revision: migrations never import the live schema.
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_sid", sa.String(), primary_key=True),
        sa.Column("parent_call_sid", sa.String(), nullable=True),
        sa.Column("flow", sa.String(), nullable=True),
        sa.Column("from_number", sa.String(), nullable=True),
        sa.Column("to_number", sa.String(), nullable=True),
        sa.Column("caller_known", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("customer_id", sa.String(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("answered_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("last_node", sa.String(), nullable=True),
        sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("steps_count", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_parent_call_sid", "calls", ["parent_call_sid"])

    op.create_table(
        "steps",
        sa.Column("call_sid", sa.String(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("flow", sa.String(), nullable=True),
        sa.Column("node", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=True),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("digits", sa.String(), nullable=True),
        sa.Column("speech", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("intent", sa.String(), nullable=True),
        sa.Column("said", sa.Text(), nullable=True),
        sa.Column("action", sa.String(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_steps_at", "steps", ["at"])
    op.create_index("ix_steps_flow_node", "steps", ["flow", "node"])

    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("call_sid", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("intent", sa.String(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("call_sid", "seq", name="uq_recordings_call_sid_seq"),
    )


def downgrade() -> None:
    op.drop_table("recordings")
    op.drop_index("ix_steps_flow_node", table_name="steps")
    op.drop_index("ix_steps_at", table_name="steps")
    op.drop_table("steps")
    op.drop_index("ix_calls_parent_call_sid", table_name="calls")
    op.drop_index("ix_calls_started_at", table_name="calls")
    op.drop_table("calls")
