/**
 * The custody attributes every new secret key gets (pkcs11-hsm.ts, asymmetric.ts, and the
 * replicas a peer site sends: site-replication.ts).
 */
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import type { SecretCustody } from './types.js';

/** The custody attributes of a new secret key: always sensitive; non-extractable, or (multi-Region
 *  keys) extractable only wrapped under a key the security officer marked trusted. */
export function custodyAttributes(custody: SecretCustody): P11.Template {
  if (custody === 'token-only') {
    return [
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    ];
  }
  return [
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: true },
    { type: pkcs11js.CKA_WRAP_WITH_TRUSTED, value: true },
  ];
}
