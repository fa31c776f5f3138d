"""Agents' state changes (callbacks/agent_state.py), for the per-agent reports.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_states",
        sa.Column("agent", sa.String(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("from_state", sa.String(), nullable=True),
        sa.Column("to_state", sa.String(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("call_sid", sa.String(), nullable=True),
        sa.Column("queue", sa.String(), nullable=True),
        sa.Column("callback_id", sa.String(), nullable=True),
        sa.Column("by", sa.String(), nullable=True),
    )
    op.create_index("ix_agent_states_at", "agent_states", ["at"])


def downgrade() -> None:
    op.drop_index("ix_agent_states_at", table_name="agent_states")
    op.drop_table("agent_states")
