-- no-transaction
-- the expiry task finds approvals past their time without reading every login
create index concurrently logins_approval_expiry_idx
    on logins ((coalesce(approval_expires_at, approved_at))) where status = 'approved';
