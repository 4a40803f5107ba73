/**
 * P11KMS_REGIONS: one deployment serving two Regions, each request in the Region of its SigV4
 * scope, through the real AWS SDK.
 */
import {
  CreateAliasCommand,
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  KMSClient,
  ListAliasesCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
  ListRetirableGrantsCommand,
} from '@aws-sdk/client-kms';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { ACCOUNT_ID, ROOT, errorOf, useTestService } from './helpers/service.js';

const HOME = 'us-east-1';
const OTHER = 'eu-west-1';
const t = useTestService({ P11KMS_REGIONS: `${HOME},${OTHER}` });
const clients = new Map<string, KMSClient>();
const clientIn = (region: string) => {
  if (!clients.has(region)) clients.set(region, new KMSClient({ endpoint: t.service.url, region, credentials: ROOT, maxAttempts: 1 }));
  return clients.get(region)!;
};
afterAll(() => clients.forEach((c) => c.destroy()));

const RETIREE = `arn:aws:iam::${ACCOUNT_ID}:role/retiree`;

describe('keys per Region', () => {
  it('a key lives in the Region it was created in: its ARN names it, other Regions do not know it', async () => {
    const other = (await clientIn(OTHER).send(new CreateKeyCommand({ Description: 'in eu', Tags: [{ TagKey: 'site', TagValue: 'eu' }] }))).KeyMetadata!;
    const home = (await clientIn(HOME).send(new CreateKeyCommand({ Description: 'in us' }))).KeyMetadata!;
    expect(other.Arn).toBe(`arn:aws:kms:${OTHER}:${ACCOUNT_ID}:key/${other.KeyId}`);
    expect(home.Arn).toBe(`arn:aws:kms:${HOME}:${ACCOUNT_ID}:key/${home.KeyId}`);

    expect((await clientIn(OTHER).send(new DescribeKeyCommand({ KeyId: other.Arn }))).KeyMetadata!.Description).toBe('in eu');
    for (const id of [other.KeyId!, other.Arn!]) {
      expect((await errorOf(clientIn(HOME).send(new DescribeKeyCommand({ KeyId: id })))).name).toBe('NotFoundException');
    }
    expect((await errorOf(clientIn(HOME).send(new ListResourceTagsCommand({ KeyId: other.KeyId })))).name).toBe('NotFoundException');
    expect((await clientIn(OTHER).send(new ListResourceTagsCommand({ KeyId: other.KeyId }))).Tags).toEqual([{ TagKey: 'site', TagValue: 'eu' }]);

    const listed = async (region: string) => {
      const ids: string[] = [];
      let marker: string | undefined;
      do {
        // Limit 1: the Region's pages skip the other Region's keys without coming up short.
        const page = await clientIn(region).send(new ListKeysCommand({ Limit: 1, Marker: marker }));
        ids.push(...page.Keys!.map((k) => k.KeyArn!));
        marker = page.NextMarker;
      } while (marker);
      return ids;
    };
    const inOther = await listed(OTHER);
    const inHome = await listed(HOME);
    expect(inOther).toContain(other.Arn);
    expect(inHome).toContain(home.Arn);
    expect(inOther.every((arn) => arn.includes(`:${OTHER}:`))).toBe(true);
    expect(inHome.every((arn) => arn.includes(`:${HOME}:`))).toBe(true);
  });

  it("a ciphertext of one Region's key does not decrypt in another", async () => {
    const key = (await clientIn(OTHER).send(new CreateKeyCommand({}))).KeyMetadata!;
    const { CiphertextBlob } = await clientIn(OTHER).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.from('site eu') }));
    const decrypted = await clientIn(OTHER).send(new DecryptCommand({ CiphertextBlob }));
    expect(Buffer.from(decrypted.Plaintext!).toString()).toBe('site eu');
    expect(decrypted.KeyId).toBe(key.Arn);
    expect((await errorOf(clientIn(HOME).send(new DecryptCommand({ CiphertextBlob })))).name).toBe('AccessDeniedException');
  });

  it("aliases and grants are the Region's own", async () => {
    const key = (await clientIn(OTHER).send(new CreateKeyCommand({}))).KeyMetadata!;
    await clientIn(OTHER).send(new CreateAliasCommand({ AliasName: 'alias/eu-only', TargetKeyId: key.KeyId }));
    const inOther = await clientIn(OTHER).send(new ListAliasesCommand({}));
    expect(inOther.Aliases!.find((a) => a.AliasName === 'alias/eu-only')?.AliasArn).toBe(`arn:aws:kms:${OTHER}:${ACCOUNT_ID}:alias/eu-only`);
    expect((await clientIn(HOME).send(new ListAliasesCommand({}))).Aliases!.map((a) => a.AliasName)).not.toContain('alias/eu-only');
    expect((await errorOf(clientIn(HOME).send(new DescribeKeyCommand({ KeyId: 'alias/eu-only' })))).name).toBe('NotFoundException');
    // An alias cannot point across Regions.
    const home = (await clientIn(HOME).send(new CreateKeyCommand({}))).KeyMetadata!;
    expect((await errorOf(clientIn(HOME).send(new CreateAliasCommand({ AliasName: 'alias/across', TargetKeyId: key.KeyId })))).name).toBe('NotFoundException');

    const grant = {
      GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:role/grantee`,
      RetiringPrincipal: RETIREE,
      Operations: ['Encrypt' as const],
    };
    const inEu = await clientIn(OTHER).send(new CreateGrantCommand({ KeyId: key.KeyId, ...grant }));
    const inUs = await clientIn(HOME).send(new CreateGrantCommand({ KeyId: home.KeyId, ...grant }));
    const retirable = async (region: string) =>
      (await clientIn(region).send(new ListRetirableGrantsCommand({ RetiringPrincipal: RETIREE, Limit: 1 }))).Grants!.map((g) => g.GrantId);
    expect(await retirable(OTHER)).toEqual([inEu.GrantId]);
    expect(await retirable(HOME)).toEqual([inUs.GrantId]);
    expect((await errorOf(clientIn(HOME).send(new CreateGrantCommand({ KeyId: key.Arn, ...grant })))).name).toBe('NotFoundException');
  });
});

describe('the Region of a request', () => {
  it("the audit record names the request's Region and its key's ARN in it", async () => {
    const key = (await clientIn(OTHER).send(new CreateKeyCommand({ Description: 'audited in eu' }))).KeyMetadata!;
    await errorOf(clientIn(HOME).send(new DescribeKeyCommand({ KeyId: key.KeyId })));
    const dir = path.join(t.dataDir, 'audit');
    const records = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .flatMap((f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean))
      .map((l) => JSON.parse(l) as { eventName: string; awsRegion: string; errorCode?: string; resources?: { ARN: string }[]; requestParameters?: { keyId?: string } });
    const created = records.find((r) => r.eventName === 'CreateKey' && r.resources?.some((x) => x.ARN === key.Arn));
    expect(created?.awsRegion).toBe(OTHER);
    const refused = records.find((r) => r.eventName === 'DescribeKey' && r.requestParameters?.keyId === key.KeyId);
    expect(refused).toMatchObject({ awsRegion: HOME, errorCode: 'NotFoundException' });
  });

  it('a request scoped to a Region not served is refused as AWS refuses a wrong scope', async () => {
    const refused = await errorOf(clientIn('ap-south-1').send(new ListKeysCommand({})));
    expect(refused.name).toBe('InvalidSignatureException');
    expect(refused.status).toBe(400);
    expect(refused.message).toBe(
      `Credential should be scoped to a valid region. This service signs in the regions ${HOME}, ${OTHER}, the request in 'ap-south-1': set the client's region to one of them. `,
    );
  });

  it('P11KMS_REGIONS: defaults to P11KMS_REGION alone; P11KMS_REGION must be among them, one partition', () => {
    const base = { P11KMS_DATA_DIR: '/tmp/unused' };
    expect(loadConfig({ ...base, P11KMS_REGION: 'eu-west-1' })).toMatchObject({ region: 'eu-west-1', regions: ['eu-west-1'] });
    expect(loadConfig({ ...base, P11KMS_REGIONS: 'eu-west-1, us-east-1' })).toMatchObject({ region: 'eu-west-1', regions: ['eu-west-1', 'us-east-1'] });
    expect(loadConfig({ ...base, P11KMS_REGIONS: 'eu-west-1,us-east-1', P11KMS_REGION: 'us-east-1' }).region).toBe('us-east-1');
    expect(() => loadConfig({ ...base, P11KMS_REGIONS: 'eu-west-1', P11KMS_REGION: 'us-east-1' })).toThrow(/not among P11KMS_REGIONS/);
    expect(() => loadConfig({ ...base, P11KMS_REGIONS: 'us-east-1,cn-north-1' })).toThrow(/mixes partitions/);
    expect(() => loadConfig({ ...base, P11KMS_REGIONS: 'us-east-1,us-east-1' })).toThrow(/names a Region twice/);
    expect(() => loadConfig({ ...base, P11KMS_REGIONS: 'us-east-1,nowhere' })).toThrow(/P11KMS_REGIONS/);
  });
});
