"""Callbacks and their attempts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copy of the types at this revision: migrations never import the live schema.
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "callbacks",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("number", sa.String(), nullable=False),
        sa.Column("call_sid", sa.String(), nullable=True),
        sa.Column("flow", sa.String(), nullable=True),
        sa.Column("origin_flow", sa.String(), nullable=True),
        sa.Column("customer_id", sa.String(), nullable=True),
        sa.Column("intent", sa.String(), nullable=True),
        sa.Column("reason_url", sa.Text(), nullable=True),
        sa.Column("reason_text", sa.Text(), nullable=True),
        sa.Column("enqueued_at", TS, nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column("agent", sa.String(), nullable=True),
        sa.Column("last_result", sa.String(), nullable=True),
        sa.Column("closed_reason", sa.Text(), nullable=True),
        sa.Column("callback_call_sid", sa.String(), nullable=True),
        sa.Column("connected_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("wait_s", sa.Float(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=True),
    )
    op.create_index("ix_callbacks_requested_at", "callbacks", ["requested_at"])
    op.create_index("ix_callbacks_call_sid", "callbacks", ["call_sid"])
    op.create_index("ix_callbacks_status", "callbacks", ["status"])

    op.create_table(
        "callback_attempts",
        sa.Column("callback_id", sa.String(), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("call_sid", sa.String(), nullable=True),
        sa.Column("agent", sa.String(), nullable=True),
        sa.Column("placed_at", TS, nullable=True),
        sa.Column("answered_at", TS, nullable=True),
        sa.Column("answered_by", sa.String(), nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("result", sa.String(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_callback_attempts_call_sid", "callback_attempts", ["call_sid"])


def downgrade() -> None:
    op.drop_index("ix_callback_attempts_call_sid", table_name="callback_attempts")
    op.drop_table("callback_attempts")
    op.drop_index("ix_callbacks_status", table_name="callbacks")
    op.drop_index("ix_callbacks_call_sid", table_name="callbacks")
    op.drop_index("ix_callbacks_requested_at", table_name="callbacks")
    op.drop_table("callbacks")
