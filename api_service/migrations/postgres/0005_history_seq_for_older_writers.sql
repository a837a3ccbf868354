-- During a rolling upgrade, instances still running the version before history positions
-- insert history rows without `seq`. Give such a row its position the way current instances
-- do (the user's counter, bumped under the user's row lock held to commit), so those writes
-- keep working and keep the positions exact.

CREATE FUNCTION history_assign_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET history_seq = history_seq + 1 WHERE id = NEW.user_id
    RETURNING history_seq INTO NEW.seq;
    RETURN NEW;
END $$;

CREATE TRIGGER history_assign_seq BEFORE INSERT ON history
    FOR EACH ROW WHEN (NEW.seq IS NULL) EXECUTE FUNCTION history_assign_seq();
