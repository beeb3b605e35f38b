"""privacy requests (GDPR data-subject requests: access, portability, erasure)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 03:54:05.928094
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # patient_id is not a foreign key on purpose: the request must survive an erasure.
    op.create_table('privacy_requests',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('organisation_id', sa.BigInteger(), nullable=False),
    sa.Column('patient_id', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=12), server_default='queued', nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('api_client_id', sa.BigInteger(), nullable=True),
    sa.Column('bundle', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('outcome', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')", name='ck_privacy_requests_status'),
    sa.CheckConstraint("type IN ('access', 'portability', 'erasure')", name='ck_privacy_requests_type'),
    sa.ForeignKeyConstraint(['api_client_id'], ['api_clients.id'], name='fk_privacy_requests_api_client_id',
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name='fk_privacy_requests_job_id', ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name='fk_privacy_requests_organisation_id',
                            ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name='pk_privacy_requests')
    )
    op.create_index('ix_privacy_requests_job_id', 'privacy_requests', ['job_id'], unique=False)
    op.create_index('ix_privacy_requests_org_id', 'privacy_requests', ['organisation_id', 'id'], unique=False)
    op.create_index('ix_privacy_requests_org_patient', 'privacy_requests', ['organisation_id', 'patient_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_privacy_requests_org_patient', table_name='privacy_requests')
    op.drop_index('ix_privacy_requests_org_id', table_name='privacy_requests')
    op.drop_index('ix_privacy_requests_job_id', table_name='privacy_requests')
    op.drop_table('privacy_requests')
