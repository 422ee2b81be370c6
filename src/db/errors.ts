/** The SQLSTATE a database error carries (`code`), if any. */
function sqlState(err: unknown): string | undefined {
  const code = err !== null && typeof err === 'object' ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Whether a database error is about the connection (worth retrying the same
 * statement once the database answers again) rather than the statement.
 */
export function isConnectionError(err: unknown): boolean {
  if (err === null || typeof err !== 'object') return false;
  if (connectFailures.has(err)) return true;
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string') {
    // pg's own connection failures carry no code; a programming error
    // (TypeError, RangeError, …) is not a connection error.
    const message = err instanceof Error ? err.message : '';
    return /connection|terminated|timeout|timed out|socket|not queryable|ECONN|EPIPE/i.test(message);
  }
  if (/^(ECONN|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN)/.test(code)) return true;
  // 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now;
  // 57P05 / 25P03: the session ended by idle_session_timeout / idle_in_transaction_session_timeout;
  // 53300: too many connections; 40001/40P01: serialization failure / deadlock (retry is safe).
  return code.startsWith('08') || /^57P0[1-3]$/.test(code) || code === '57P05' || code === '25P03' || code === '53300' || isTransactionConflict(err);
}

/** Errors thrown while a connection was being opened (see markConnectFailure). */
const connectFailures = new WeakSet<object>();

/** Whether `err` was thrown while a connection was being opened: no statement was sent. */
export function isConnectFailure(err: unknown): boolean {
  return err !== null && typeof err === 'object' && connectFailures.has(err);
}

/**
 * Marks an error thrown while a connection was being opened as a connection
 * error whatever its code: no statement ran, so the same statement may pass
 * on a connection opened later. Among them: a database not accepting
 * connections for now (55000, `ALLOW_CONNECTIONS false`), a password being
 * rotated (28P01), a database being renamed back (3D000).
 */
export function markConnectFailure<E>(err: E): E {
  if (err !== null && typeof err === 'object') connectFailures.add(err);
  return err;
}

/** Whether PostgreSQL ended the transaction to break a deadlock (40P01) or a serialization conflict (40001). */
export function isTransactionConflict(err: unknown): boolean {
  const code = sqlState(err);
  return code === '40P01' || code === '40001';
}

/** Whether PostgreSQL ended the transaction for a serialization conflict (40001: under repeatable read, a row another transaction changed since the snapshot). */
export function isSerializationFailure(err: unknown): boolean {
  return sqlState(err) === '40001';
}

/**
 * An error after which the same write may succeed if sent again: a
 * connection error, a statement cancelled by `statement_timeout` (57014)
 * or `lock_timeout` (55P03), say while another transaction held the row,
 * or a write refused by a read-only server (25006: a failover that put a
 * replica, or a primary on its way down, behind the address for a while).
 */
export function isTransientError(err: unknown): boolean {
  return isConnectionError(err) || isCancelledByTimeout(err) || sqlState(err) === '25006';
}

/** A statement cancelled by `statement_timeout` (57014) or `lock_timeout` (55P03). */
export function isCancelledByTimeout(err: unknown): boolean {
  const code = sqlState(err);
  return code === '57014' || code === '55P03';
}

/** A data exception (SQLSTATE class 22): the value was refused, not the connection or the statement. */
export function isDataException(err: unknown): boolean {
  return sqlState(err)?.startsWith('22') ?? false;
}
