/**
 * Multi-Region keys in one deployment serving two Regions (P11KMS_REGIONS), through the real AWS
 * SDK: CreateKey MultiRegion, ReplicateKey, DescribeKey on both sides, ciphertexts across
 * Regions, rotation of the primary seen by the replica, UpdatePrimaryRegion, aliases per Region,
 * the deletion states (PendingReplicaDeletion) with a moved clock, and AWS's errors. Run on each
 * metadata store (test/regions-multi-region-keys*.test.ts).
 */
import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DeleteImportedKeyMaterialCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GenerateMacCommand,
  GetKeyLastUsageCommand,
  GetParametersForImportCommand,
  ImportKeyMaterialCommand,
  GetKeyPolicyCommand,
  GetKeyRotationStatusCommand,
  KMSClient,
  ListAliasesCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
  ReplicateKeyCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
  SignCommand,
  UpdatePrimaryRegionCommand,
  VerifyMacCommand,
  VerifyCommand,
} from '@aws-sdk/client-kms';
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspectBackingKey } from '../../src/hsm/pkcs11-token.js';
import { DAY_MS } from '../helpers/clock.js';
import { ACCOUNT_ID, ROOT, errorOf, startTestService, tempDir, type TestService } from '../helpers/service.js';

const US = 'us-east-1';
const EU = 'eu-west-1';
/** A third served Region: a second replica. */
const DE = 'eu-central-1';
const arnIn = (region: string, keyId: string) => `arn:aws:kms:${region}:${ACCOUNT_ID}:key/${keyId}`;

/** The suite on a service whose metadata store `storeEnv` configures ({} for SQLite). */
export function describeMultiRegionKeys(store: string, storeEnv: () => Promise<Record<string, string>>): void {
  describe(`multi-Region keys (${store})`, () => {
    let offsetMs = 0;
    const now = () => new Date(Date.now() + offsetMs);
    let t: TestService;
    const clients: KMSClient[] = [];
    /** A client signing in `region` with the moved clock. */
    const kms = (region: string) => {
      const c = new KMSClient({ endpoint: t.service.url, region, credentials: ROOT, maxAttempts: 1, systemClockOffset: offsetMs });
      clients.push(c);
      return c;
    };
    let env: Record<string, string>;
    beforeAll(async () => {
      env = { P11KMS_DATA_DIR: tempDir('p11kms-mrk-'), P11KMS_REGIONS: `${US},${EU},${DE}`, ...(await storeEnv()) };
      t = await startTestService(env, now);
    });
    afterAll(async () => {
      clients.forEach((c) => c.destroy());
      await t?.stop();
    });
    type AuditRecord = { eventName: string; awsRegion: string; eventType: string; resources?: { ARN: string }[] };
    const auditRecords = (): AuditRecord[] => {
      const dir = path.join(env.P11KMS_DATA_DIR!, 'audit');
      return fs
        .readdirSync(dir)
        .filter((f) => f.endsWith('.jsonl'))
        .flatMap((f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean))
        .map((l) => JSON.parse(l) as AuditRecord);
    };
    async function primaryAndReplica(params: ConstructorParameters<typeof CreateKeyCommand>[0] = {}) {
      const primary = (await kms(US).send(new CreateKeyCommand({ ...params, MultiRegion: true, Description: 'primary' }))).KeyMetadata!;
      const replicated = await kms(US).send(new ReplicateKeyCommand({ KeyId: primary.KeyId, ReplicaRegion: EU, Description: 'replica', Tags: [{ TagKey: 'site', TagValue: 'eu' }] }));
      return { keyId: primary.KeyId!, primary, replicated };
    }

    describe('creating and replicating', () => {
      it('CreateKey MultiRegion gives an mrk- key, primary in its Region, and ReplicateKey the same key ID in the other', async () => {
        const { keyId, primary, replicated } = await primaryAndReplica();
        expect(keyId).toMatch(/^mrk-[0-9a-f]{32}$/);
        expect(primary).toMatchObject({
          MultiRegion: true,
          Arn: arnIn(US, keyId),
          MultiRegionConfiguration: { MultiRegionKeyType: 'PRIMARY', PrimaryKey: { Arn: arnIn(US, keyId), Region: US }, ReplicaKeys: [] },
        });
        expect(replicated.ReplicaKeyMetadata).toMatchObject({
          KeyId: keyId,
          Arn: arnIn(EU, keyId),
          Description: 'replica',
          KeyState: 'Enabled',
          MultiRegion: true,
          MultiRegionConfiguration: { MultiRegionKeyType: 'REPLICA', PrimaryKey: { Region: US }, ReplicaKeys: [{ Arn: arnIn(EU, keyId), Region: EU }] },
        });
        expect(replicated.ReplicaTags).toEqual([{ TagKey: 'site', TagValue: 'eu' }]);
        expect(JSON.parse(replicated.ReplicaPolicy!).Statement[0].Principal.AWS).toBe(`arn:aws:iam::${ACCOUNT_ID}:root`);

        const inUs = (await kms(US).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
        expect(inUs.Description).toBe('primary');
        expect(inUs.MultiRegionConfiguration!.ReplicaKeys).toEqual([{ Arn: arnIn(EU, keyId), Region: EU }]);
        const inEu = (await kms(EU).send(new DescribeKeyCommand({ KeyId: arnIn(EU, keyId) }))).KeyMetadata!;
        expect(inEu.Description).toBe('replica');
        // Own tags in each Region; the same token object: one CurrentKeyMaterialId.
        expect((await kms(EU).send(new ListResourceTagsCommand({ KeyId: keyId }))).Tags).toEqual([{ TagKey: 'site', TagValue: 'eu' }]);
        expect((await kms(US).send(new ListResourceTagsCommand({ KeyId: keyId }))).Tags).toEqual([]);
        expect(inEu.CurrentKeyMaterialId).toBe(inUs.CurrentKeyMaterialId);
        expect(await inspectBackingKey(t.service.services.hsm, { keyId, version: 1 })).toBeDefined();
        // The audit trail: ReplicateKey in the primary's Region, a CreateKey in the replica's.
        const records = auditRecords();
        expect(records.find((r) => r.eventName === 'ReplicateKey' && r.resources?.some((x) => x.ARN === arnIn(US, keyId)))?.awsRegion).toBe(US);
        expect(records.find((r) => r.eventName === 'CreateKey' && r.resources?.some((x) => x.ARN === arnIn(EU, keyId)))).toMatchObject({ awsRegion: EU, eventType: 'AwsServiceEvent' });
        const listed = (await kms(EU).send(new ListKeysCommand({ Limit: 1000 }))).Keys!;
        expect(listed).toContainEqual({ KeyId: keyId, KeyArn: arnIn(EU, keyId) });
        // Pages of one: the markers of multi-Region keys lead on to the same listing.
        const paged: typeof listed = [];
        let marker: string | undefined;
        do {
          const page = await kms(EU).send(new ListKeysCommand({ Limit: 1, Marker: marker }));
          paged.push(...page.Keys!);
          marker = page.NextMarker;
        } while (marker);
        expect(paged).toEqual(listed);
        // Single-Region keys say so.
        const single = (await kms(US).send(new CreateKeyCommand({}))).KeyMetadata!;
        expect(single.MultiRegion).toBe(false);
        expect(single.MultiRegionConfiguration).toBeUndefined();
      });

      it('ciphertexts of the primary decrypt with the replica and back; the encryption context still binds', async () => {
        const { keyId } = await primaryAndReplica();
        const context = { purpose: 'cross-region' };
        const fromUs = await kms(US).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('made in us'), EncryptionContext: context }));
        const inEu = await kms(EU).send(new DecryptCommand({ CiphertextBlob: fromUs.CiphertextBlob, EncryptionContext: context }));
        expect(Buffer.from(inEu.Plaintext!).toString()).toBe('made in us');
        expect(inEu.KeyId).toBe(arnIn(EU, keyId));
        // Naming the replica as the key to decrypt with (AWS: the related multi-Region key works).
        const named = await kms(EU).send(new DecryptCommand({ CiphertextBlob: fromUs.CiphertextBlob, EncryptionContext: context, KeyId: arnIn(EU, keyId) }));
        expect(Buffer.from(named.Plaintext!).toString()).toBe('made in us');
        expect((await errorOf(kms(EU).send(new DecryptCommand({ CiphertextBlob: fromUs.CiphertextBlob, EncryptionContext: { purpose: 'other' } })))).name).toBe('InvalidCiphertextException');

        const fromEu = await kms(EU).send(new EncryptCommand({ KeyId: arnIn(EU, keyId), Plaintext: Buffer.from('made in eu') }));
        expect(Buffer.from((await kms(US).send(new DecryptCommand({ CiphertextBlob: fromEu.CiphertextBlob }))).Plaintext!).toString()).toBe('made in eu');

        // A second replica: every Region's key decrypts every other's ciphertexts.
        await kms(US).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: DE }));
        expect((await kms(DE).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.MultiRegionConfiguration!.ReplicaKeys).toEqual([
          { Arn: arnIn(DE, keyId), Region: DE },
          { Arn: arnIn(EU, keyId), Region: EU },
        ]);
        expect(Buffer.from((await kms(DE).send(new DecryptCommand({ CiphertextBlob: fromEu.CiphertextBlob }))).Plaintext!).toString()).toBe('made in eu');
        const fromDe = await kms(DE).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('made in de') }));
        for (const region of [US, EU]) {
          expect(Buffer.from((await kms(region).send(new DecryptCommand({ CiphertextBlob: fromDe.CiphertextBlob }))).Plaintext!).toString()).toBe('made in de');
        }
      });

      it('asymmetric and HMAC multi-Region keys: a signature or MAC of one Region verifies in the other', async () => {
        const ecc = await primaryAndReplica({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
        const message = Buffer.from('signed in us');
        const { Signature } = await kms(US).send(new SignCommand({ KeyId: ecc.keyId, Message: message, SigningAlgorithm: 'ECDSA_SHA_256' }));
        expect((await kms(EU).send(new VerifyCommand({ KeyId: ecc.keyId, Message: message, Signature, SigningAlgorithm: 'ECDSA_SHA_256' }))).SignatureValid).toBe(true);

        const hmac = await primaryAndReplica({ KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' });
        const { Mac } = await kms(EU).send(new GenerateMacCommand({ KeyId: hmac.keyId, Message: message, MacAlgorithm: 'HMAC_SHA_256' }));
        expect((await kms(US).send(new VerifyMacCommand({ KeyId: hmac.keyId, Message: message, Mac, MacAlgorithm: 'HMAC_SHA_256' }))).MacValid).toBe(true);
      });

      it('the replica has its own policy, enabled state and aliases; an alias name can exist in both Regions', async () => {
        const { keyId } = await primaryAndReplica();
        const other = (await kms(EU).send(new CreateKeyCommand({}))).KeyMetadata!;
        await kms(US).send(new CreateAliasCommand({ AliasName: 'alias/mrk-app', TargetKeyId: keyId }));
        await kms(EU).send(new CreateAliasCommand({ AliasName: 'alias/mrk-app', TargetKeyId: other.KeyId }));
        expect((await kms(US).send(new DescribeKeyCommand({ KeyId: 'alias/mrk-app' }))).KeyMetadata!.KeyId).toBe(keyId);
        expect((await kms(EU).send(new DescribeKeyCommand({ KeyId: 'alias/mrk-app' }))).KeyMetadata!.KeyId).toBe(other.KeyId);
        const duplicate = await errorOf(kms(EU).send(new CreateAliasCommand({ AliasName: 'alias/mrk-app', TargetKeyId: keyId })));
        expect(duplicate.name).toBe('AlreadyExistsException');
        await kms(EU).send(new CreateAliasCommand({ AliasName: 'alias/mrk-replica', TargetKeyId: keyId }));
        expect((await kms(EU).send(new ListAliasesCommand({ KeyId: keyId }))).Aliases!.map((a) => a.AliasName)).toEqual(['alias/mrk-replica']);
        expect((await kms(US).send(new ListAliasesCommand({ KeyId: keyId }))).Aliases!.map((a) => a.AliasName)).toEqual(['alias/mrk-app']);

        await kms(EU).send(new DisableKeyCommand({ KeyId: keyId }));
        expect((await kms(EU).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.KeyState).toBe('Disabled');
        expect((await kms(US).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.KeyState).toBe('Enabled');
        expect((await errorOf(kms(EU).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x') })))).name).toBe('DisabledException');

        // A replica created with a policy that denies the root user: that Region's policy decides there.
        const denying = JSON.stringify({
          Version: '2012-10-17',
          Statement: [
            { Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:*', Resource: '*' },
            { Effect: 'Deny', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:Encrypt', Resource: '*' },
          ],
        });
        const second = (await kms(US).send(new CreateKeyCommand({ MultiRegion: true }))).KeyMetadata!;
        const replicated = await kms(US).send(new ReplicateKeyCommand({ KeyId: second.KeyId, ReplicaRegion: EU, Policy: denying }));
        expect(replicated.ReplicaPolicy).toBe(denying);
        expect(replicated.ReplicaTags).toEqual([]);
        expect((await kms(EU).send(new GetKeyPolicyCommand({ KeyId: second.KeyId }))).Policy).toBe(denying);
        expect((await errorOf(kms(EU).send(new EncryptCommand({ KeyId: second.KeyId, Plaintext: Buffer.from('x') })))).name).toBe('AccessDeniedException');
        await kms(US).send(new EncryptCommand({ KeyId: second.KeyId, Plaintext: Buffer.from('x') }));
      });

      it('condition keys: kms:MultiRegionKeyType in a replica policy, kms:ReplicaRegion in the primary policy', async () => {
        const root = `arn:aws:iam::${ACCOUNT_ID}:root`;
        const policy = (deny: Record<string, unknown>) =>
          JSON.stringify({
            Version: '2012-10-17',
            Statement: [
              { Effect: 'Allow', Principal: { AWS: root }, Action: 'kms:*', Resource: '*' },
              { Effect: 'Deny', Principal: { AWS: root }, Resource: '*', ...deny },
            ],
          });
        const noEuReplicas = policy({ Action: 'kms:ReplicateKey', Condition: { StringEquals: { 'kms:ReplicaRegion': EU } } });
        const guarded = (await kms(US).send(new CreateKeyCommand({ MultiRegion: true, Policy: noEuReplicas }))).KeyMetadata!;
        expect((await errorOf(kms(US).send(new ReplicateKeyCommand({ KeyId: guarded.KeyId, ReplicaRegion: EU })))).name).toBe('AccessDeniedException');

        const replicasDontEncrypt = policy({ Action: 'kms:Encrypt', Condition: { StringEquals: { 'kms:MultiRegionKeyType': 'REPLICA' } } });
        const key = (await kms(US).send(new CreateKeyCommand({ MultiRegion: true, Policy: replicasDontEncrypt }))).KeyMetadata!;
        await kms(US).send(new ReplicateKeyCommand({ KeyId: key.KeyId, ReplicaRegion: EU, Policy: replicasDontEncrypt }));
        await kms(US).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.from('primary') }));
        expect((await errorOf(kms(EU).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.from('replica') })))).name).toBe('AccessDeniedException');
      });

      it("AWS's errors: replica exists, not multi-Region, a replica is not replicated, Region not served", async () => {
        const { keyId } = await primaryAndReplica();
        expect((await errorOf(kms(US).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: EU })))).name).toBe('AlreadyExistsException');
        const single = (await kms(US).send(new CreateKeyCommand({}))).KeyMetadata!;
        expect((await errorOf(kms(US).send(new ReplicateKeyCommand({ KeyId: single.KeyId, ReplicaRegion: EU })))).name).toBe('UnsupportedOperationException');
        expect((await errorOf(kms(US).send(new UpdatePrimaryRegionCommand({ KeyId: single.KeyId, PrimaryRegion: EU })))).name).toBe('UnsupportedOperationException');
        expect((await errorOf(kms(EU).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: US })))).name).toBe('UnsupportedOperationException');
        const notServed = await errorOf(kms(US).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: 'ap-south-1' })));
        expect(notServed.name).toBe('UnsupportedOperationException');
        expect(notServed.message).toMatch(/ap-south-1 is not served by this deployment/);
        expect((await errorOf(kms(US).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: US })))).name).toBe('ValidationException');
        expect((await errorOf(kms(US).send(new ReplicateKeyCommand({ KeyId: `mrk-${'0'.repeat(32)}`, ReplicaRegion: EU })))).name).toBe('NotFoundException');
        expect((await errorOf(kms(US).send(new ReplicateKeyCommand({ KeyId: 'arn:aws:kms:bad', ReplicaRegion: EU })))).name).toBe('InvalidArnException');
      });
    });

    describe('imported key material', () => {
      /** GetParametersForImport in `region`, then the material wrapped as an AWS customer does. */
      async function importInto(region: string, keyId: string, material: Buffer, importToken?: Uint8Array) {
        const params = await kms(region).send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }));
        const publicKey = createPublicKey({ key: Buffer.from(params.PublicKey!), format: 'der', type: 'spki' });
        const EncryptedKeyMaterial = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, material);
        return kms(region).send(new ImportKeyMaterialCommand({ KeyId: keyId, ImportToken: importToken ?? params.ImportToken, EncryptedKeyMaterial, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' }));
      }
      const stateIn = async (region: string, keyId: string) => (await kms(region).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.KeyState;

      it('each Region\'s key imports the same material on its own; deleting it from one leaves the others', async () => {
        const material = randomBytes(32);
        const primary = (await kms(US).send(new CreateKeyCommand({ MultiRegion: true, Origin: 'EXTERNAL' }))).KeyMetadata!;
        expect(primary).toMatchObject({ KeyState: 'PendingImport', MultiRegion: true, Origin: 'EXTERNAL' });
        const keyId = primary.KeyId!;
        const replicated = await kms(US).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: EU }));
        expect(replicated.ReplicaKeyMetadata).toMatchObject({ KeyState: 'PendingImport', Origin: 'EXTERNAL' });

        await importInto(US, keyId, material);
        expect(await stateIn(US, keyId)).toBe('Enabled');
        expect(await stateIn(EU, keyId)).toBe('PendingImport');
        const { CiphertextBlob } = await kms(US).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('imported') }));
        expect((await errorOf(kms(EU).send(new DecryptCommand({ CiphertextBlob })))).name).toBe('KMSInvalidStateException');

        // An import token of one Region's key is not the other's; other material is refused.
        const usToken = (await kms(US).send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }))).ImportToken;
        expect((await errorOf(importInto(EU, keyId, material, usToken))).name).toBe('InvalidImportTokenException');
        expect((await errorOf(importInto(EU, keyId, randomBytes(32)))).name).toBe('IncorrectKeyMaterialException');
        expect(await stateIn(EU, keyId)).toBe('PendingImport');
        await importInto(EU, keyId, material);
        expect(await stateIn(EU, keyId)).toBe('Enabled');
        expect(Buffer.from((await kms(EU).send(new DecryptCommand({ CiphertextBlob }))).Plaintext!).toString()).toBe('imported');

        await kms(EU).send(new DeleteImportedKeyMaterialCommand({ KeyId: keyId }));
        expect(await stateIn(EU, keyId)).toBe('PendingImport');
        expect(Buffer.from((await kms(US).send(new DecryptCommand({ CiphertextBlob }))).Plaintext!).toString()).toBe('imported');
        expect(await inspectBackingKey(t.service.services.hsm, { keyId, version: 1 })).toBeDefined();
        // The last key holding it deletes the token object.
        await kms(US).send(new DeleteImportedKeyMaterialCommand({ KeyId: keyId }));
        expect(await stateIn(US, keyId)).toBe('PendingImport');
        await expect(inspectBackingKey(t.service.services.hsm, { keyId, version: 1 })).rejects.toThrow();
        await importInto(EU, keyId, material);
        expect(await stateIn(EU, keyId)).toBe('Enabled');
        expect(Buffer.from((await kms(EU).send(new DecryptCommand({ CiphertextBlob }))).Plaintext!).toString()).toBe('imported');

        // New material for an on-demand rotation is not offered for multi-Region keys.
        const rotation = await errorOf(
          (async () => {
            const params = await kms(EU).send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }));
            const publicKey = createPublicKey({ key: Buffer.from(params.PublicKey!), format: 'der', type: 'spki' });
            const EncryptedKeyMaterial = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, randomBytes(32));
            return kms(EU).send(new ImportKeyMaterialCommand({ KeyId: keyId, ImportToken: params.ImportToken, EncryptedKeyMaterial, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE', ImportType: 'NEW_KEY_MATERIAL' }));
          })(),
        );
        expect(rotation.name).toBe('UnsupportedOperationException');
      });
    });

    describe('rotation and the primary Region', () => {
      it('rotating the primary is seen by the replica: old and new ciphertexts decrypt there; rotation is managed on the primary only', async () => {
        const { keyId } = await primaryAndReplica();
        const before = await kms(US).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('before') }));
        await kms(US).send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
        await kms(US).send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
        const us = (await kms(US).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
        const eu = (await kms(EU).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
        expect(eu.CurrentKeyMaterialId).toBe(us.CurrentKeyMaterialId);
        const after = await kms(EU).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('after') }));
        for (const [blob, text] of [[before.CiphertextBlob, 'before'], [after.CiphertextBlob, 'after']] as const) {
          expect(Buffer.from((await kms(EU).send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe(text);
          expect(Buffer.from((await kms(US).send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe(text);
        }
        expect(await kms(EU).send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).toMatchObject({ KeyRotationEnabled: true, RotationPeriodInDays: 90 });
        for (const command of [new RotateKeyOnDemandCommand({ KeyId: keyId }), new EnableKeyRotationCommand({ KeyId: keyId })]) {
          expect((await errorOf(kms(EU).send(command as never))).name).toBe('UnsupportedOperationException');
        }
      });

      it("automatic rotation of the primary reaches the replica; a disabled primary does not rotate, whatever the replica's state", async () => {
        const rotating = await primaryAndReplica();
        const still = await primaryAndReplica();
        for (const { keyId } of [rotating, still]) await kms(US).send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
        await kms(US).send(new DisableKeyCommand({ KeyId: still.keyId }));
        const materialIn = async (region: string, keyId: string) => (await kms(region).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.CurrentKeyMaterialId;
        const before = { rotating: await materialIn(EU, rotating.keyId), still: await materialIn(EU, still.keyId) };
        offsetMs += 91 * DAY_MS;
        const { rotated } = await t.service.runDueWork();
        expect(rotated).toContain(rotating.keyId);
        expect(rotated).not.toContain(still.keyId);
        expect(await materialIn(EU, rotating.keyId)).not.toBe(before.rotating);
        expect(await materialIn(EU, rotating.keyId)).toBe(await materialIn(US, rotating.keyId));
        expect(await materialIn(EU, still.keyId)).toBe(before.still);
      });

      it('UpdatePrimaryRegion swaps the roles on both sides', async () => {
        const { keyId } = await primaryAndReplica();
        await kms(US).send(new UpdatePrimaryRegionCommand({ KeyId: keyId, PrimaryRegion: EU }));
        const eu = (await kms(EU).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.MultiRegionConfiguration!;
        const us = (await kms(US).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.MultiRegionConfiguration!;
        expect(eu).toEqual({ MultiRegionKeyType: 'PRIMARY', PrimaryKey: { Arn: arnIn(EU, keyId), Region: EU }, ReplicaKeys: [{ Arn: arnIn(US, keyId), Region: US }] });
        expect(us.MultiRegionKeyType).toBe('REPLICA');
        expect(us.PrimaryKey).toEqual({ Arn: arnIn(EU, keyId), Region: EU });
        // The old primary is now a replica: it can no longer replicate nor move the primary.
        expect((await errorOf(kms(US).send(new UpdatePrimaryRegionCommand({ KeyId: keyId, PrimaryRegion: EU })))).name).toBe('UnsupportedOperationException');
        await kms(EU).send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
      });
    });

    describe('per Region, and across a restart', () => {
      it("GetKeyLastUsage is each Region's own; a restart (with its token/database check) keeps primary and replica working", async () => {
        const { keyId } = await primaryAndReplica();
        const { CiphertextBlob } = await kms(EU).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('before restart') }));
        const usedInEu = await kms(EU).send(new GetKeyLastUsageCommand({ KeyId: keyId }));
        expect(usedInEu.KeyLastUsage?.Operation).toBe('Encrypt');
        expect((await kms(US).send(new GetKeyLastUsageCommand({ KeyId: keyId }))).KeyLastUsage?.Operation).toBeUndefined();

        await t.stop();
        t = await startTestService(env, now);
        const decrypted = await kms(US).send(new DecryptCommand({ CiphertextBlob }));
        expect(Buffer.from(decrypted.Plaintext!).toString()).toBe('before restart');
        expect((await kms(EU).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.MultiRegionConfiguration!.MultiRegionKeyType).toBe('REPLICA');
        expect((await kms(EU).send(new GetKeyLastUsageCommand({ KeyId: keyId }))).KeyLastUsage?.Operation).toBe('Encrypt');
      });
    });

    describe('deletion', () => {
      it('after UpdatePrimaryRegion the old primary is a replica deleted on its own; the material stays; replicating back shares it again', async () => {
        const { keyId } = await primaryAndReplica();
        const blob = (await kms(US).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('made in us') }))).CiphertextBlob;
        await kms(US).send(new UpdatePrimaryRegionCommand({ KeyId: keyId, PrimaryRegion: EU }));
        expect((await kms(US).send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }))).KeyState).toBe('PendingDeletion');
        offsetMs += 7 * DAY_MS + 60_000;
        await t.service.runDueWork();
        expect((await errorOf(kms(US).send(new DescribeKeyCommand({ KeyId: keyId })))).name).toBe('NotFoundException');
        expect((await kms(EU).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.MultiRegionConfiguration).toMatchObject({ MultiRegionKeyType: 'PRIMARY', ReplicaKeys: [] });
        expect(await inspectBackingKey(t.service.services.hsm, { keyId, version: 1 })).toBeDefined();
        expect(Buffer.from((await kms(EU).send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe('made in us');

        await kms(EU).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: US }));
        expect(Buffer.from((await kms(US).send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe('made in us');
        expect((await kms(US).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.MultiRegionConfiguration!.MultiRegionKeyType).toBe('REPLICA');
      });

      it('a primary with replicas waits in PendingReplicaDeletion; the last replica deleted starts its own waiting period', async () => {
        const { keyId } = await primaryAndReplica();
        const blob = (await kms(US).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('kept') }))).CiphertextBlob;
        const scheduled = await kms(US).send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 10 }));
        expect(scheduled).toMatchObject({ KeyId: arnIn(US, keyId), KeyState: 'PendingReplicaDeletion', PendingWindowInDays: 10 });
        expect(scheduled.DeletionDate).toBeUndefined();
        const primary = (await kms(US).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
        expect(primary).toMatchObject({ KeyState: 'PendingReplicaDeletion', PendingDeletionWindowInDays: 10, Enabled: false });
        expect((await errorOf(kms(US).send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x') })))).name).toBe('KMSInvalidStateException');
        // AWS: a primary pending replica deletion cannot be replicated.
        expect((await errorOf(kms(US).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: EU })))).name).toBe('KMSInvalidStateException');
        // CancelKeyDeletion works from PendingReplicaDeletion too, then schedule again.
        await kms(US).send(new CancelKeyDeletionCommand({ KeyId: keyId }));
        expect((await kms(US).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.KeyState).toBe('Disabled');
        await kms(US).send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 10 }));

        const replica = await kms(EU).send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }));
        expect(replica.KeyState).toBe('PendingDeletion');
        offsetMs += 7 * DAY_MS + 60_000;
        await t.service.runDueWork();
        expect((await errorOf(kms(EU).send(new DescribeKeyCommand({ KeyId: keyId })))).name).toBe('NotFoundException');
        const waiting = (await kms(US).send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
        expect(waiting).toMatchObject({ KeyState: 'PendingDeletion', PendingDeletionWindowInDays: 10, MultiRegionConfiguration: { ReplicaKeys: [] } });
        expect(waiting.DeletionDate!.getTime()).toBeGreaterThan(now().getTime() + 9 * DAY_MS);
        // The material is the primary's still: the token object stays until the primary goes.
        expect(await inspectBackingKey(t.service.services.hsm, { keyId, version: 1 })).toBeDefined();

        offsetMs += 10 * DAY_MS + 60_000;
        await t.service.runDueWork();
        expect((await errorOf(kms(US).send(new DescribeKeyCommand({ KeyId: keyId })))).name).toBe('NotFoundException');
        await expect(inspectBackingKey(t.service.services.hsm, { keyId, version: 1 })).rejects.toThrow();
        const deletions = auditRecords().filter((r) => r.eventName === 'DeleteKey' && r.resources?.some((x) => x.ARN.endsWith(keyId)));
        expect(deletions.map((r) => [r.awsRegion, r.resources![0]!.ARN])).toEqual([[EU, arnIn(EU, keyId)], [US, arnIn(US, keyId)]]);
        expect((await errorOf(kms(US).send(new DecryptCommand({ CiphertextBlob: blob })))).name).toBe('AccessDeniedException');
      });
    });
  });
}
