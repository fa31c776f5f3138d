"""Text messages flows send (sms: nodes) and how their delivery went.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("call_sid", sa.String(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("flow", sa.String(), nullable=True),
        sa.Column("node", sa.String(), nullable=True),
        sa.Column("to_number", sa.String(), nullable=True),
        sa.Column("message_sid", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_messages_message_sid", "messages", ["message_sid"])


def downgrade() -> None:
    op.drop_index("ix_messages_message_sid", table_name="messages")
    op.drop_table("messages")
