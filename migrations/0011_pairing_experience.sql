-- What the pairing page tells the person about a login, as the platform gave it at creation:
-- the platform's name as people know it, and where the desktop that asked seems to be (a
-- place or network), so a person sent someone else's pairing link can tell.

set local lock_timeout = '5s';

alter table logins add column platform_name text;
alter table logins add column desktop_place text;
alter table logins add constraint logins_platform_name_length
    check (char_length(platform_name) between 1 and 60) not valid;
alter table logins add constraint logins_desktop_place_length
    check (char_length(desktop_place) between 1 and 80) not valid;
