/**
 * Where a JSON text stops being valid, for the `validation-failed` detail of a malformed
 * body. V8's own messages quote the input back and often omit the position, so the api
 * finds the spot itself. Iterative (an explicit stack), so a deeply nested body cannot
 * overflow the call stack.
 */
export interface JsonSyntaxProblem {
  /** 0-based character offset. */
  offset: number;
  /** 1-based line and column. */
  line: number;
  column: number;
  reason: string;
}

const WS = new Set([' ', '\t', '\n', '\r']);
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const LITERALS = ['true', 'false', 'null'];

/** The first syntax problem of `text`, or undefined when it is valid JSON. */
export function findJsonSyntaxProblem(text: string): JsonSyntaxProblem | undefined {
  let i = 0;
  // Containers still open: '{' or '['.
  const stack: string[] = [];
  const fail = (reason: string): JsonSyntaxProblem => {
    const before = text.slice(0, i);
    const line = before.split('\n').length;
    const column = i - before.lastIndexOf('\n');
    const at = i >= text.length ? 'end of input' : `character ${JSON.stringify(text[i])}`;
    return { offset: i, line, column, reason: `${reason} (found ${at})` };
  };
  const skipWs = () => {
    while (i < text.length && WS.has(text[i]!)) i++;
  };
  // Returns a problem, or advances i past one string.
  const readString = (): JsonSyntaxProblem | undefined => {
    i++; // opening quote
    while (i < text.length) {
      const c = text[i]!;
      if (c === '"') {
        i++;
        return undefined;
      }
      if (c === '\\') {
        const e = text[i + 1];
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
            i++;
            return fail('invalid \\u escape in string');
          }
          i += 6;
          continue;
        }
        if (e === undefined || !'"\\/bfnrt'.includes(e)) {
          i++;
          return fail('invalid escape in string');
        }
        i += 2;
        continue;
      }
      if (c < ' ') return fail('unescaped control character in string');
      i++;
    }
    return fail('unterminated string');
  };
  // Returns a problem, or advances i past one scalar, or opens a container.
  const readValue = (): JsonSyntaxProblem | undefined => {
    skipWs();
    const c = text[i];
    if (c === '{' || c === '[') {
      stack.push(c);
      i++;
      return undefined;
    }
    if (c === '"') return readString();
    NUMBER.lastIndex = i;
    if (NUMBER.test(text)) {
      i = NUMBER.lastIndex;
      return undefined;
    }
    for (const lit of LITERALS) {
      if (text.startsWith(lit, i)) {
        i += lit.length;
        return undefined;
      }
    }
    return fail('expected a value');
  };

  let problem = readValue();
  if (problem) return problem;
  // After opening a container (or finishing a value), decide what comes next.
  let justOpened = stack.length > 0;
  while (stack.length > 0) {
    skipWs();
    const top = stack[stack.length - 1]!;
    const close = top === '{' ? '}' : ']';
    if (text[i] === close && justOpened) {
      stack.pop();
      i++;
      justOpened = false;
      continue;
    }
    if (!justOpened) {
      if (text[i] === close) {
        stack.pop();
        i++;
        continue;
      }
      if (text[i] !== ',') return fail(`expected ',' or '${close}'`);
      i++;
      skipWs();
    }
    if (top === '{') {
      if (text[i] !== '"') return fail('expected a property name in double quotes');
      problem = readString();
      if (problem) return problem;
      skipWs();
      if (text[i] !== ':') return fail("expected ':' after the property name");
      i++;
    }
    const depth = stack.length;
    problem = readValue();
    if (problem) return problem;
    justOpened = stack.length > depth;
  }
  skipWs();
  if (i < text.length) return fail('unexpected content after the JSON value');
  return undefined;
}
