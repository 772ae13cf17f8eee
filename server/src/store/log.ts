// The slice of a pino logger the store uses; pino's Logger satisfies it.
export interface StoreLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
