"""Self-service in the reports: calls answered by a request node, per call and per node.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("call_metrics") as batch:
        batch.add_column(sa.Column("self_service", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "service_metrics",
        sa.Column("call_sid", sa.String(), primary_key=True),
        sa.Column("flow", sa.String(), primary_key=True),
        sa.Column("node", sa.String(), primary_key=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("direction", sa.String(), nullable=False, server_default="inbound"),
        sa.Column("queue", sa.String(), nullable=True),
        *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in (
            "requests", "answered", "errors", "waited", "ms_total")),
        sa.Column("resolved", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_service_metrics_started_at", "service_metrics", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_service_metrics_started_at", table_name="service_metrics")
    op.drop_table("service_metrics")
    with op.batch_alter_table("call_metrics") as batch:
        batch.drop_column("self_service")
