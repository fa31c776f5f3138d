"""Per-call and per-menu summaries for reports, dashboard users.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copy of the types at this revision: migrations never import the live schema.
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "call_metrics",
        sa.Column("call_sid", sa.String(), primary_key=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("start_hour", sa.Integer(), nullable=False),
        sa.Column("flow", sa.String(), nullable=True),
        sa.Column("direction", sa.String(), nullable=False, server_default="inbound"),
        sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("from_number", sa.String(), nullable=True),
        sa.Column("caller_known", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("last_node", sa.String(), nullable=True),
        sa.Column("last_kind", sa.String(), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("first_prompt_s", sa.Float(), nullable=True),
        sa.Column("destination", sa.String(), nullable=True),
        sa.Column("destination_kind", sa.String(), nullable=True),
        sa.Column("time_to_destination_s", sa.Float(), nullable=True),
        sa.Column("menu_steps", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("prompt_s", sa.Float(), nullable=False, server_default="0"),
        sa.Column("queue", sa.String(), nullable=True),
        sa.Column("queue_wait_s", sa.Float(), nullable=True),
        sa.Column("answered", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("answer_wait_s", sa.Float(), nullable=True),
        sa.Column("callback", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("spoke", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("intent", sa.String(), nullable=True),
        sa.Column("intent_recognised", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("errors", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("repeat_24h", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("repeat_7d", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("steps_count", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_call_metrics_started_at", "call_metrics", ["started_at"])

    op.create_table(
        "menu_metrics",
        sa.Column("call_sid", sa.String(), primary_key=True),
        sa.Column("flow", sa.String(), primary_key=True),
        sa.Column("node", sa.String(), primary_key=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("direction", sa.String(), nullable=False, server_default="inbound"),
        sa.Column("queue", sa.String(), nullable=True),
        sa.Column("visits", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("inputs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("speech_inputs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("speech_recognised", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("keypad_inputs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("keypad_after_speech", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("no_input", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("no_match", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("confirmations", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("confirm_rejected", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("escaped", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_menu_metrics_started_at", "menu_metrics", ["started_at"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_login_at", TS, nullable=True),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )

    # Repeat calls: earlier calls from the same number.
    op.create_index("ix_calls_from_number_started_at", "calls", ["from_number", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_from_number_started_at", table_name="calls")
    op.drop_table("users")
    op.drop_index("ix_menu_metrics_started_at", table_name="menu_metrics")
    op.drop_table("menu_metrics")
    op.drop_index("ix_call_metrics_started_at", table_name="call_metrics")
    op.drop_table("call_metrics")
