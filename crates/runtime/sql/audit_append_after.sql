-- A stand-alone batch of audit events appended in one round trip (identity's audit writer:
-- refused and successful sign-ins and the like, which go with no other change). The writer
-- remembers the head it left; called outside a transaction, this statement is a transaction
-- of its own: it takes the chain's lock and reads the last number (audit_chain_head), and
-- appends the events (numbered and linked from that head by the writer) only if the chain
-- still ends there. Otherwise nothing is appended and the head found is answered, for the
-- writer to number and link them again. The unique index on `sequence` stands behind the
-- check. One file, linked into every service's migrations.
CREATE FUNCTION audit_append_after(
    expected bigint,
    p_sequence bigint[], p_hash bytea[], p_id uuid[], p_occurred_at timestamptz[],
    p_actor_kind text[], p_actor_id text[], p_actor_name text[], p_organisation text[],
    p_role text[], p_action text[], p_target_type text[], p_target_id text[],
    p_outcome text[], p_request_id text[], p_address text[], p_agent text[],
    p_details jsonb[], p_changes jsonb[],
    OUT appended boolean, OUT head bigint, OUT head_hash bytea)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- The lock and the head as every writer takes them (the statement's transaction has no
    -- row changes of its own to take up).
    SELECT c.head, c.head_hash INTO head, head_hash FROM audit_chain_head() c;
    appended := head = expected;
    IF appended THEN
        INSERT INTO audit_events (sequence, hash, id, occurred_at, actor_kind, actor_id,
            actor_name, actor_organisation_id, actor_role, action, target_type, target_id,
            outcome, request_id, client_address, user_agent, details, changes)
        SELECT u_s, u_h, u_i, u_t, u_k, u_a, u_n, u_o, u_r, u_ac, u_tt, u_ti, u_oc,
            NULLIF(u_rq, ''), u_ca, u_ua, u_d, u_c
        FROM UNNEST(p_sequence, p_hash, p_id, p_occurred_at, p_actor_kind, p_actor_id,
            p_actor_name, p_organisation, p_role, p_action, p_target_type, p_target_id,
            p_outcome, p_request_id, p_address, p_agent, p_details, p_changes)
            AS u(u_s, u_h, u_i, u_t, u_k, u_a, u_n, u_o, u_r, u_ac, u_tt, u_ti, u_oc, u_rq,
                 u_ca, u_ua, u_d, u_c);
    END IF;
END;
$$;
