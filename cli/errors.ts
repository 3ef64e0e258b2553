// Errors the CLI reports as one clear line and a non-zero exit code (no stack trace).
export class CliError extends Error {
  constructor(
    message: string,
    /** 2: bad input or usage; 1: the operation failed. */
    readonly exitCode = 1,
  ) {
    super(message)
  }
}

/** Bad input: exit code 2. */
export const usage = (message: string) => new CliError(message, 2)
