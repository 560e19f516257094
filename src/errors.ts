/** Errors that teach: each names what was wrong and, where there is a choice, the valid ones. */

/** A shape or attribute problem inside one op of a graph. */
export class OpError extends Error {
  constructor(op: string, node: string, message: string) {
    super(`${op} '${node}': ${message}`);
    this.name = 'OpError';
  }
}

/** A bad option or name given by the user (an unknown preset, an impossible width, a wrong input). */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
