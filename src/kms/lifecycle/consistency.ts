/**
 * Token/database consistency: what the start-up check logs and `p11kms doctor` reports and
 * repairs. Divergences arise from crashes between the token write and the database write
 * (CreateKey, rotation, import), from manual token changes, or from restoring one side only.
 *
 * Repair never destroys anything unless asked to (destroyOrphans), and never touches metadata
 * that ciphertexts may still depend on.
 */
import { keyImporterOf } from '../../hsm/key-import.js';
import type { BackingKeyRef, Hsm } from '../../hsm/types.js';
import type { MaterialRecord } from '../../store/lifecycle.js';
import type { KeyRecord, MetadataStore } from '../../store/types.js';
import { apiKeyId } from '../regional-store.js';

export interface ConsistencyReport {
  /** Token objects of a key version the database does not know (or knows as not imported). */
  orphanObjects: BackingKeyRef[];
  /** Key versions the database expects in the token that are not there. */
  missingObjects: BackingKeyRef[];
  /** Keys whose versions are not 1..n, or whose current version is not one of them. */
  versionProblems: Array<{ keyId: string; versions: number[]; currentVersion: number }>;
  /** Import wrapping keys in the token without their import parameters. */
  orphanWrappingKeys: string[];
  /** Import parameters whose wrapping keys are gone from the token. */
  staleImportParameters: string[];
}

export function isConsistent(r: ConsistencyReport): boolean {
  return Object.values(r).every((list) => list.length === 0);
}

const refName = (r: BackingKeyRef) => `${r.keyId}#${r.version}`;

export async function checkConsistency(hsm: Hsm, store: MetadataStore): Promise<ConsistencyReport> {
  const inToken = await hsm.listBackingKeys();
  const keys = await allKeys(store);
  const materialsByKey = new Map<string, MaterialRecord[]>();
  for (const key of keys.values()) materialsByKey.set(key.keyId, await store.lifecycle.listMaterials(key.keyId));

  const expected = new Set<string>();
  const known = new Set<string>();
  for (const materials of materialsByKey.values()) {
    for (const m of materials) {
      known.add(refName(m));
      if (m.importState !== 'PENDING_IMPORT') expected.add(refName(m));
    }
  }
  const present = new Set(inToken.map(refName));
  const orphanObjects = inToken.filter((r) => !expected.has(refName(r)));
  const missingObjects = [...materialsByKey.values()]
    .flat()
    .filter((m) => expected.has(refName(m)) && !present.has(refName(m)))
    .map((m) => ({ keyId: m.keyId, version: m.version }));

  const versionProblems: ConsistencyReport['versionProblems'] = [];
  for (const key of keys.values()) {
    // A Region's row of a multi-Region key holds no versions: its material row does.
    if (key.keyId !== apiKeyId(key.keyId)) continue;
    const versions = (materialsByKey.get(key.keyId) ?? []).map((m) => m.version);
    const contiguous = versions.every((v, i) => v === i + 1);
    if (!contiguous || !versions.includes(key.currentVersion)) versionProblems.push({ keyId: key.keyId, versions, currentVersion: key.currentVersion });
  }

  const importer = keyImporterOf(hsm);
  const wrappingInToken = new Set(await importer.listWrappingKeyIds());
  const parameters = await store.lifecycle.listImportParameters();
  const parameterIds = new Set(parameters.map((p) => p.importId));
  return {
    orphanObjects,
    missingObjects,
    versionProblems,
    orphanWrappingKeys: [...wrappingInToken].filter((id) => !parameterIds.has(id)),
    staleImportParameters: parameters.filter((p) => !wrappingInToken.has(p.importId)).map((p) => p.importId),
  };
}

export interface RepairOptions {
  /** Destroy token objects that no metadata refers to. Without it nothing is destroyed. */
  destroyOrphans: boolean;
}

/** What repair did, one line per action. */
export async function repairConsistency(hsm: Hsm, store: MetadataStore, report: ConsistencyReport, options: RepairOptions): Promise<string[]> {
  const done: string[] = [];
  const keys = await allKeys(store);
  for (const ref of report.missingObjects) {
    const key = keys.get(ref.keyId);
    const material = (await store.lifecycle.listMaterials(ref.keyId)).find((m) => m.version === ref.version);
    // Imported material can come back by re-import: record it as gone, as expiry would.
    if (key && material?.importState === 'IMPORTED') {
      await store.lifecycle.updateMaterial(ref.keyId, ref.version, { importState: 'PENDING_IMPORT' });
      if (ref.version <= key.currentVersion && key.keyState !== 'PendingDeletion') await store.updateKey(ref.keyId, { keyState: 'PendingImport' });
      done.push(`${refName(ref)}: imported material missing from the token; marked PENDING_IMPORT (re-import the same material to restore it)`);
    } else {
      done.push(`${refName(ref)}: generated material missing from the token cannot be restored; restore the token from backup`);
    }
  }
  for (const problem of report.versionProblems) {
    const highest = Math.max(0, ...problem.versions);
    if (problem.currentVersion > highest && highest > 0) {
      await store.updateKey(problem.keyId, { currentVersion: highest });
      done.push(`${problem.keyId}: current version ${problem.currentVersion} has no material; set back to ${highest}`);
    } else {
      done.push(`${problem.keyId}: versions [${problem.versions.join(', ')}] with current ${problem.currentVersion} need manual review`);
    }
  }
  for (const importId of report.staleImportParameters) {
    await store.lifecycle.deleteImportParameters(importId);
    done.push(`import ${importId}: parameters without wrapping keys removed`);
  }
  if (options.destroyOrphans) {
    for (const ref of report.orphanObjects) {
      await hsm.destroyKey(ref);
      done.push(`${refName(ref)}: orphan token object destroyed`);
    }
    for (const importId of report.orphanWrappingKeys) {
      await keyImporterOf(hsm).destroyWrappingKey(importId);
      done.push(`import ${importId}: orphan wrapping keys destroyed`);
    }
  } else if (report.orphanObjects.length + report.orphanWrappingKeys.length > 0) {
    done.push(`${report.orphanObjects.length + report.orphanWrappingKeys.length} orphan token object(s) kept: pass --destroy-orphans to destroy them`);
  }
  return done;
}

async function allKeys(store: MetadataStore): Promise<Map<string, KeyRecord>> {
  const keys = new Map<string, KeyRecord>();
  let after: string | undefined;
  for (;;) {
    const page = await store.listKeys(after, 1000);
    for (const key of page) keys.set(key.keyId, key);
    if (page.length < 1000) return keys;
    after = page[page.length - 1]!.keyId;
  }
}
