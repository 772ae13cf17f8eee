// What every statement runs on: the pool or an open transaction, whichever the caller passes.
import type postgres from "postgres";

export type Queryable = postgres.ISql;

/** Domain records are plain JSON data; the driver's JSONValue type cannot see that through their interfaces. */
export const asJson = (value: object): postgres.JSONValue => value as postgres.JSONValue;

/** OID of text: a parameter already encoded as JSON is sent as text and cast, not encoded again. */
export const TEXT_OID = 25;
