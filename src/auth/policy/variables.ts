/**
 * Policy variables (Version 2012-10-17): `${aws:username}`, `${aws:PrincipalTag/team}`, the
 * escapes `${*}`, `${?}`, `${$}`, and defaults `${aws:username, 'nobody'}`.
 */
import type { PolicyContext } from './conditions.js';

const VARIABLE = /\$\{([^}]*)\}/g;

export const hasPolicyVariable = (s: string) => s.includes('${');

/** The value with its variables replaced, or undefined when a variable has no value (AWS then
 *  treats the element as not matching). A multivalued key cannot be a variable, nor can an
 *  ambiguous one (request members whose names differ only in case). */
export function substitutePolicyVariables(value: string, context: PolicyContext): string | undefined {
  let missing = false;
  const out = value.replace(VARIABLE, (_, inner: string) => {
    const body = inner.trim();
    if (body === '*' || body === '?' || body === '$') return body;
    const [name, fallback] = splitDefault(body);
    const found = context.get(name.toLowerCase());
    if (typeof found === 'string') return found;
    if (fallback !== undefined) return fallback;
    missing = true;
    return '';
  });
  return missing ? undefined : out;
}

function splitDefault(body: string): [string, string | undefined] {
  const m = /^([^,]+),\s*'([^']*)'$/.exec(body);
  return m ? [m[1]!.trim(), m[2]!] : [body, undefined];
}
