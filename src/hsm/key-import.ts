/**
 * Imported key material (BYOK) on the token side: the RSA wrapping key pairs of
 * GetParametersForImport, the MAC that makes import tokens unforgeable, and the unwrap of
 * customer material straight into a non-extractable token object with C_UnwrapKey.
 *
 * Per import (GetParametersForImport call) the token holds three objects under
 * CKA_ID "import#<importId>", label "p11kms-import:<importId>": the RSA private key (CKA_UNWRAP),
 * its public key, and an HMAC-SHA-256 secret that authenticates the import token.
 *
 * This file is the entry point the rest of the service uses (keyImporterOf, KeyImporter, the
 * request, result and error types) and decides, per unwrap, the custody path and whether the
 * object-write lock is taken. The token work lives in its siblings:
 *  - key-import-wrapping.ts: the wrapping key pair and MAC secret of an import; finding,
 *    listing and destroying them.
 *  - key-import-secret.ts: AES and HMAC material (RSAES_OAEP_*, RSA_AES_KEY_WRAP_* as two
 *    unwraps, software OAEP unpadding where the token lacks OAEP-SHA-256, the in-token length
 *    measurement, check values), with the mechanism gaps of SoftHSM2 2.6.1 and how they are bridged.
 *  - key-import-keypair.ts: PKCS#8 private keys, only through C_UnwrapKey, and the
 *    reconstruction of their public key (RSA attributes; EC by ECDH with G plus a test signature).
 *  - key-import-common.ts: the shared types and token helpers.
 * Software OAEP unpadding (CKM_RSA_X_509 in the token, the padding removed in the service) runs
 * only where the probe shows the token lacks OAEP-SHA-256; the caller may forbid it (strict key
 * custody), and results say which path ran.
 */
import { timingSafeEqual } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import {
  KeyImportError,
  type MaterialCustody,
  type UnwrapRequest,
  type UnwrapResult,
  type WrappingAlgorithm,
  type WrappingKeySpec,
  destroyQuietly,
  inLane,
  isKeyPair,
  probeOaepSha256,
} from './key-import-common.js';
import { unwrapKeyPair } from './key-import-keypair.js';
import { checkValueOf, materialTemplate, rsaAesUnwrap, rsaUnwrap } from './key-import-secret.js';
import { createWrappingKey, destroyWrappingKey, findImportObject, listWrappingKeyIds, macImportToken } from './key-import-wrapping.js';
import { tokenAccessOf, type TokenAccess } from './pkcs11-token.js';
import { type BackingKeyRef, type Hsm, HsmError } from './types.js';

export {
  KeyImportError,
  type KeyImportFailure,
  type KeyPairMaterial,
  type MaterialCustody,
  type MaterialKind,
  type UnwrapRequest,
  type UnwrapResult,
  WRAPPING_KEY_BITS,
  type WrappingAlgorithm,
  type WrappingKeySpec,
} from './key-import-common.js';

type Handle = P11.Handle;

const importers = new WeakMap<Hsm, KeyImporter>();

/** The key-import side of an Hsm opened with openHsm (one per Hsm, so probes are cached). */
export function keyImporterOf(hsm: Hsm): KeyImporter {
  let importer = importers.get(hsm);
  if (!importer) {
    importer = new KeyImporter(tokenAccessOf(hsm));
    importers.set(hsm, importer);
  }
  return importer;
}

export class KeyImporter {
  private oaepSha256: Promise<boolean> | undefined;

  constructor(private readonly t: TokenAccess) {}

  /** Whether the token does RSA-OAEP with SHA-256 itself (probed once with a throwaway key). */
  hasOaepSha256(): Promise<boolean> {
    this.oaepSha256 ??= probeOaepSha256(this.t);
    return this.oaepSha256;
  }

  /** Generates the wrapping key pair and the token-MAC key of one import; returns the DER SPKI. */
  async createWrappingKey(importId: string, spec: WrappingKeySpec, algorithm: WrappingAlgorithm): Promise<Buffer> {
    const needsRawDecrypt = algorithm.endsWith('SHA_256') && !(await this.hasOaepSha256());
    return createWrappingKey(this.t, importId, spec, needsRawDecrypt);
  }

  /** HMAC-SHA-256 of `data` under the import's token-held MAC key. */
  macImportToken(importId: string, data: Uint8Array): Promise<Buffer> {
    return macImportToken(this.t, importId, data);
  }

  /** Whether `mac` is the import's MAC of `data`; false also when the import's objects are gone. */
  async verifyImportToken(importId: string, data: Uint8Array, mac: Uint8Array): Promise<boolean> {
    let expected: Buffer;
    try {
      expected = await this.macImportToken(importId, data);
    } catch (err) {
      if (err instanceof HsmError && err.kind === 'key-not-found') return false;
      throw err;
    }
    return mac.length === expected.length && timingSafeEqual(expected, mac);
  }

  /** Destroys the three objects of an import; no error when already gone. */
  destroyWrappingKey(importId: string): Promise<void> {
    return destroyWrappingKey(this.t, importId);
  }

  /** Import IDs whose wrapping private key is in the token (consistency checks). */
  listWrappingKeyIds(): Promise<string[]> {
    return listWrappingKeyIds(this.t);
  }

  /** Unwraps customer material into the token (see key-import-secret.ts and key-import-keypair.ts
   *  for the paths). */
  async unwrap(request: UnwrapRequest): Promise<UnwrapResult> {
    const hash = request.algorithm.endsWith('SHA_256') ? 'sha256' : 'sha1';
    const softwareUnpadding = hash === 'sha256' && !(await this.hasOaepSha256());
    if (softwareUnpadding && !request.allowSoftwareUnpadding) {
      throw new KeyImportError(
        'custody-refused',
        'this token has no CKM_RSA_PKCS_OAEP with SHA-256, and strict key custody (P11KMS_STRICT_KEY_CUSTODY=true) forbids removing the OAEP padding outside the token',
      );
    }
    const custody: MaterialCustody = softwareUnpadding ? 'software-oaep-unpadding' : 'token-unwrap';
    if (softwareUnpadding) this.t.log('warn', `import ${request.importId}: ${request.algorithm} emulated with CKM_RSA_X_509 and OAEP unpadding in the service (token lacks OAEP-SHA-256)`);
    const persistent = request.target !== 'probe';
    // The whole unwrap holds a slow-lane thread (lane first, then the write lock when it creates
    // a token object), and every token call of it runs there (key-import-common.ts inLane).
    return inLane(this.t, async (t, session) => {
      const privateKey = await findImportObject(t, session, request.importId, pkcs11js.CKO_PRIVATE_KEY);
      const kind = request.material;
      if (isKeyPair(kind)) {
        const checkValue = await unwrapKeyPair(t, session, privateKey, Buffer.from(request.wrapped), request.algorithm, hash, softwareUnpadding, request.target, kind);
        if (persistent) this.t.forget(request.target as BackingKeyRef);
        return { checkValue, custody };
      }
      const template = materialTemplate(t, request.target, kind);
      const wrapped = Buffer.from(request.wrapped);
      let material: Handle;
      if (request.algorithm.startsWith('RSAES_OAEP')) {
        material = await rsaUnwrap(t, session, privateKey, wrapped, hash, softwareUnpadding, template, kind);
      } else {
        material = await rsaAesUnwrap(t, session, privateKey, wrapped, hash, softwareUnpadding, template, kind);
      }
      try {
        const checkValue = await checkValueOf(t, session, material, kind);
        if (!persistent) await destroyQuietly(t, session, material);
        else this.t.forget(request.target as BackingKeyRef);
        return { checkValue, custody };
      } catch (err) {
        await destroyQuietly(t, session, material);
        throw err;
      }
    }, persistent);
  }
}
