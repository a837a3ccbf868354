-- The admin user list pages by username in byte order (COLLATE "C"), the order SQLite uses,
-- whatever collation this database was created with; this index serves
-- `WHERE username COLLATE "C" > $1 ORDER BY username COLLATE "C" LIMIT $2` as one range scan.
CREATE INDEX users_username_bytes ON users (username COLLATE "C");
