-- Cheaper history writes: every `/stock` adds a history row, in batches whose user row locks
-- are held until the commit is flushed, so what a batch costs the server is what the whole
-- write path waits on.
--
-- The history -> users foreign key checked every inserted row with a lookup of a user row
-- the same statement had just locked and updated (a quarter of a 30-row batch's time in a
-- pgbench probe). The statement that assigns positions already proves the user exists:
-- a user deleted meanwhile gets no position and the row breaks `seq NOT NULL`. What the
-- key's ON DELETE CASCADE did is done by a trigger on users instead, for every way a user
-- is deleted (this version, an older instance during a rolling upgrade, or psql). Its
-- DELETE runs after the user's row lock was won, on a fresh snapshot, so it also removes
-- rows committed by a batch that held that lock meanwhile.
CREATE FUNCTION users_delete_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM history WHERE user_id = OLD.id;
    RETURN NULL;
END $$;

CREATE TRIGGER users_delete_history AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_delete_history();

ALTER TABLE history DROP CONSTRAINT history_user_id_fkey;
