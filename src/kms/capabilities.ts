/**
 * Which key specs and usages this token can serve, and why not the others: the same checks
 * CreateKey makes (mechanism discovery through C_GetMechanismList), run for every pair AWS allows.
 * `p11kms doctor` prints it; the console's service page shows it.
 */
import type { Services } from './context.js';
import { KmsError } from './errors.js';
import { checkKeySpecAndUsage } from './key-generation.js';
import { KEY_SPECS, type KeyUsage } from './key-specs.js';

export interface Capability {
  keySpec: string;
  keyUsage: string;
  algorithms: readonly string[];
  served: boolean;
  /** Why not, when not served. */
  reason?: string;
}

export function capabilityTable(svc: Pick<Services, 'hsm'>): Capability[] {
  const table: Capability[] = [];
  for (const [keySpec, info] of Object.entries(KEY_SPECS)) {
    for (const [keyUsage, algorithms] of Object.entries(info.usages) as [KeyUsage, readonly string[]][]) {
      try {
        checkKeySpecAndUsage(svc, keySpec, keyUsage);
        table.push({ keySpec, keyUsage, algorithms, served: true });
      } catch (e) {
        if (!(e instanceof KmsError)) throw e;
        table.push({ keySpec, keyUsage, algorithms, served: false, reason: e.message });
      }
    }
  }
  return table;
}
