import type { Logger } from '../../src/index.js';

export interface Line {
  level: string;
  obj: Record<string, unknown>;
  msg: string | undefined;
}

/** A Logger that keeps every line, and calls `onLine` for each. */
export function captureLogger(lines: Line[], onLine: (line: Line) => void = () => undefined, bindings: Record<string, unknown> = {}): Logger {
  const at = (level: string) => (obj: object, msg?: string) => {
    const line = { level, obj: { ...bindings, ...obj }, msg };
    lines.push(line);
    onLine(line);
  };
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    child: (more) => captureLogger(lines, onLine, { ...bindings, ...more }),
  };
}
