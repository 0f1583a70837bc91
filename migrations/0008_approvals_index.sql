-- no-transaction
-- the expiry task finds approvals past their time without reading every login
create index concurrently if not exists logins_approval_expiry_idx
    on logins (approval_expires_at) where status = 'approved';
