/**
 * IAM's wildcards: `*` (any run of characters, also none) and `?` (exactly one character).
 *
 * Matching is a two-pointer scan that backtracks only to the last `*`: O(pattern × text) at worst
 * and linear in practice, so no policy can make evaluation slow (regular expressions built from
 * patterns such as `*a*a*a*b` backtrack exponentially). ARN patterns keep wildcards inside their
 * colon-separated part, as AWS's ArnLike does.
 */

export type TextMatcher = (text: string) => boolean;

/** Does `text` match `pattern` as a whole? */
export function wildcardMatch(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    const pc = pattern[p];
    if (pc === '*') {
      starP = p++;
      starT = t;
    } else if (pc !== undefined && (pc === '?' || pc === text[t])) {
      p++;
      t++;
    } else if (starP >= 0) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (pattern[p] === '*') p++;
  return p === pattern.length;
}

/** One pattern, compiled to its cheapest test. */
export function compileWildcard(pattern: string, ignoreCase = false): TextMatcher {
  const pat = ignoreCase ? pattern.toLowerCase() : pattern;
  const fold = ignoreCase ? (s: string) => s.toLowerCase() : (s: string) => s;
  if (pat === '*') return () => true;
  const firstWildcard = pat.search(/[*?]/);
  if (firstWildcard === -1) return (text) => fold(text) === pat;
  if (firstWildcard === pat.length - 1 && pat.endsWith('*')) {
    const prefix = pat.slice(0, -1);
    return (text) => fold(text).startsWith(prefix);
  }
  return (text) => wildcardMatch(pat, fold(text));
}

/** Matches when any of `patterns` matches. */
export function compileWildcards(patterns: readonly string[], ignoreCase = false): TextMatcher {
  const matchers = patterns.map((p) => compileWildcard(p, ignoreCase));
  if (matchers.length === 1) return matchers[0]!;
  return (text) => matchers.some((m) => m(text));
}

/** arn:partition:service:region:account:resource → its six parts, or undefined. */
export function splitArn(arn: string): string[] | undefined {
  const parts = arn.split(':');
  if (parts.length < 6) return undefined;
  return [...parts.slice(0, 5), parts.slice(5).join(':')];
}

/**
 * ArnLike/ArnEquals: the six parts of an ARN are matched one by one, so a wildcard never crosses
 * a colon except in the last part (the resource, which may itself contain colons).
 */
export function compileArnPattern(pattern: string): TextMatcher | undefined {
  const parts = splitArn(pattern);
  if (!parts) return undefined;
  const matchers = parts.map((p) => compileWildcard(p));
  return (arn) => {
    const given = splitArn(arn);
    return given !== undefined && matchers.every((m, i) => m(given[i]!));
  };
}
