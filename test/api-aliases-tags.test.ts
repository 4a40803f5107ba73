/**
 * Aliases and tags through the real AWS SDK.
 */
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DeleteAliasCommand,
  DescribeKeyCommand,
  ListAliasesCommand,
  ListResourceTagsCommand,
  ScheduleKeyDeletionCommand,
  TagResourceCommand,
  UntagResourceCommand,
  UpdateAliasCommand,
} from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { ACCOUNT_ID, REGION, errorOf, useTestService } from './helpers/service.js';

const t = useTestService();

const newKey = async (tags?: { TagKey: string; TagValue: string }[]) =>
  (await t.client.send(new CreateKeyCommand({ Tags: tags }))).KeyMetadata!;

describe('aliases', () => {
  it('CreateAlias, ListAliases (all and per key), UpdateAlias, DeleteAlias', async () => {
    const a = await newKey();
    const b = await newKey();
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/app', TargetKeyId: a.KeyId }));
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/app-2', TargetKeyId: a.Arn }));
    const forA = await t.client.send(new ListAliasesCommand({ KeyId: a.KeyId }));
    expect(forA.Aliases!.map((x) => x.AliasName)).toEqual(['alias/app', 'alias/app-2']);
    const entry = forA.Aliases![0]!;
    expect(entry.AliasArn).toBe(`arn:aws:kms:${REGION}:${ACCOUNT_ID}:alias/app`);
    expect(entry.TargetKeyId).toBe(a.KeyId);
    expect(entry.CreationDate).toBeInstanceOf(Date);
    expect(entry.LastUpdatedDate).toBeInstanceOf(Date);

    await t.client.send(new UpdateAliasCommand({ AliasName: 'alias/app', TargetKeyId: b.KeyId }));
    expect((await t.client.send(new DescribeKeyCommand({ KeyId: 'alias/app' }))).KeyMetadata!.KeyId).toBe(b.KeyId);
    expect((await t.client.send(new ListAliasesCommand({ KeyId: b.Arn }))).Aliases!.map((x) => x.AliasName)).toEqual(['alias/app']);

    await t.client.send(new DeleteAliasCommand({ AliasName: 'alias/app' }));
    expect((await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: 'alias/app' })))).name).toBe('NotFoundException');
    expect((await errorOf(t.client.send(new DeleteAliasCommand({ AliasName: 'alias/app' })))).name).toBe('NotFoundException');
    expect((await errorOf(t.client.send(new UpdateAliasCommand({ AliasName: 'alias/app', TargetKeyId: a.KeyId })))).name).toBe('NotFoundException');
  });

  it('enforces AWS alias name rules and uniqueness', async () => {
    const k = await newKey();
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/Unique_1-x/y', TargetKeyId: k.KeyId }));
    const dup = await errorOf(t.client.send(new CreateAliasCommand({ AliasName: 'alias/Unique_1-x/y', TargetKeyId: k.KeyId })));
    expect(dup).toMatchObject({ name: 'AlreadyExistsException', status: 400 });
    // AWS answers a missing prefix with ValidationException (recorded), not InvalidAliasNameException.
    const noPrefix = await errorOf(t.client.send(new CreateAliasCommand({ AliasName: 'noprefix', TargetKeyId: k.KeyId })));
    expect(noPrefix).toMatchObject({ name: 'ValidationException', status: 400, message: expect.stringMatching(/^Alias must start with the prefix "alias\/"\. Please see /) });
    for (const bad of ['alias/', 'alias/aws/reserved']) {
      expect((await errorOf(t.client.send(new CreateAliasCommand({ AliasName: bad, TargetKeyId: k.KeyId })))).name).toBe('InvalidAliasNameException');
    }
    expect((await errorOf(t.client.send(new CreateAliasCommand({ AliasName: 'alias/has space', TargetKeyId: k.KeyId })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new CreateAliasCommand({ AliasName: 'alias/x' + 'y'.repeat(256), TargetKeyId: k.KeyId })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new CreateAliasCommand({ AliasName: 'alias/to-alias', TargetKeyId: 'alias/Unique_1-x/y' })))).name).toBe('NotFoundException');
    expect((await errorOf(t.client.send(new CreateAliasCommand({ AliasName: 'alias/to-missing', TargetKeyId: '00000000-0000-4000-8000-000000000000' })))).name).toBe('NotFoundException');
  });

  it('refuses aliases to keys pending deletion', async () => {
    const k = await newKey();
    await t.client.send(new ScheduleKeyDeletionCommand({ KeyId: k.KeyId, PendingWindowInDays: 7 }));
    expect((await errorOf(t.client.send(new CreateAliasCommand({ AliasName: 'alias/doomed', TargetKeyId: k.KeyId })))).name).toBe('KMSInvalidStateException');
  });

  it('paginates ListAliases', async () => {
    const k = await newKey();
    for (let i = 0; i < 5; i++) await t.client.send(new CreateAliasCommand({ AliasName: `alias/page-${i}`, TargetKeyId: k.KeyId }));
    const names: string[] = [];
    let marker: string | undefined;
    do {
      const page = await t.client.send(new ListAliasesCommand({ KeyId: k.KeyId, Limit: 2, Marker: marker }));
      names.push(...page.Aliases!.map((a) => a.AliasName!));
      marker = page.NextMarker;
      expect(page.Truncated).toBe(marker !== undefined);
    } while (marker);
    expect(names).toEqual(['alias/page-0', 'alias/page-1', 'alias/page-2', 'alias/page-3', 'alias/page-4']);
    expect((await errorOf(t.client.send(new ListAliasesCommand({ Limit: 101 })))).name).toBe('ValidationException');
  });
});

describe('tags', () => {
  it('TagResource adds and overwrites, UntagResource removes (missing keys ignored), ListResourceTags lists', async () => {
    const k = await newKey([{ TagKey: 'team', TagValue: 'a' }]);
    await t.client.send(new TagResourceCommand({ KeyId: k.Arn, Tags: [{ TagKey: 'team', TagValue: 'b' }, { TagKey: 'env', TagValue: '' }] }));
    expect((await t.client.send(new ListResourceTagsCommand({ KeyId: k.KeyId }))).Tags).toEqual([
      { TagKey: 'env', TagValue: '' },
      { TagKey: 'team', TagValue: 'b' },
    ]);
    await t.client.send(new UntagResourceCommand({ KeyId: k.KeyId, TagKeys: ['team', 'never-set'] }));
    expect((await t.client.send(new ListResourceTagsCommand({ KeyId: k.KeyId }))).Tags).toEqual([{ TagKey: 'env', TagValue: '' }]);
  });

  it('enforces the aws: prefix, duplicates, the 50-tag limit and pagination', async () => {
    const k = await newKey();
    expect((await errorOf(t.client.send(new TagResourceCommand({ KeyId: k.KeyId, Tags: [{ TagKey: 'aws:owner', TagValue: 'x' }] })))).name).toBe('TagException');
    expect((await errorOf(t.client.send(new UntagResourceCommand({ KeyId: k.KeyId, TagKeys: ['aws:owner'] })))).name).toBe('TagException');
    expect(
      (await errorOf(t.client.send(new TagResourceCommand({ KeyId: k.KeyId, Tags: [{ TagKey: 'a', TagValue: '1' }, { TagKey: 'a', TagValue: '2' }] })))).name,
    ).toBe('TagException');
    expect((await errorOf(t.client.send(new TagResourceCommand({ KeyId: k.KeyId, Tags: [{ TagKey: 'k'.repeat(129), TagValue: '' }] })))).name).toBe('ValidationException');
    const fifty = Array.from({ length: 50 }, (_, i) => ({ TagKey: `t${String(i).padStart(2, '0')}`, TagValue: String(i) }));
    await t.client.send(new TagResourceCommand({ KeyId: k.KeyId, Tags: fifty }));
    expect((await errorOf(t.client.send(new TagResourceCommand({ KeyId: k.KeyId, Tags: [{ TagKey: 'one-more', TagValue: '' }] })))).name).toBe('LimitExceededException');
    await t.client.send(new TagResourceCommand({ KeyId: k.KeyId, Tags: [{ TagKey: 't00', TagValue: 'overwrite is fine' }] }));
    const first = await t.client.send(new ListResourceTagsCommand({ KeyId: k.KeyId, Limit: 20 }));
    expect(first.Tags).toHaveLength(20);
    expect(first.Truncated).toBe(true);
    const rest = await t.client.send(new ListResourceTagsCommand({ KeyId: k.KeyId, Marker: first.NextMarker }));
    expect(rest.Tags).toHaveLength(30);
    expect(rest.Truncated).toBe(false);
    expect(first.Tags![0]).toEqual({ TagKey: 't00', TagValue: 'overwrite is fine' });
    const other = await newKey();
    expect((await errorOf(t.client.send(new ListResourceTagsCommand({ KeyId: other.KeyId, Marker: first.NextMarker })))).name).toBe('InvalidMarkerException');
  });

  it('refuses tag changes on keys pending deletion', async () => {
    const k = await newKey();
    await t.client.send(new ScheduleKeyDeletionCommand({ KeyId: k.KeyId, PendingWindowInDays: 7 }));
    expect((await errorOf(t.client.send(new TagResourceCommand({ KeyId: k.KeyId, Tags: [{ TagKey: 'a', TagValue: 'b' }] })))).name).toBe('KMSInvalidStateException');
    expect((await errorOf(t.client.send(new UntagResourceCommand({ KeyId: k.KeyId, TagKeys: ['a'] })))).name).toBe('KMSInvalidStateException');
  });
});
