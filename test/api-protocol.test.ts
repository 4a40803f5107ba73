/**
 * The wire protocol as AWS answers it: awsJson1_1 errors, status codes, request IDs, SigV4
 * failures, health check, unsupported operations, and deny-by-default for non-root principals.
 */
import { CreateCustomKeyStoreCommand, CreateKeyCommand, DeleteCustomKeyStoreCommand, ListKeysCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { writePrincipalsFile } from './helpers/principals.js';
import { rawCall } from './helpers/raw.js';
import { ACCOUNT_ID, errorOf, useTestService } from './helpers/service.js';

const ALICE = { accessKeyId: 'AKIAALICE00000000001', secretAccessKey: 'alice-secret-0123456789abcdefghij' };

const t = useTestService(() => ({
  P11KMS_PRINCIPALS_FILE: writePrincipalsFile([{ arn: `arn:aws:iam::${ACCOUNT_ID}:user/alice`, ...ALICE, policies: [] }]),
}));

describe('awsJson1_1 protocol', () => {
  it('answers a signed request with 200, the JSON content type and x-amzn-RequestId', async () => {
    const r = await rawCall(t.service.url, { target: 'TrentService.ListKeys', body: '' });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/x-amz-json-1.1');
    expect(r.headers.get('x-amzn-requestid')).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.json).toMatchObject({ Keys: expect.any(Array), Truncated: false });
  });

  it('rejects malformed JSON, unknown targets and wrong member types with AWS error shapes', async () => {
    const bad = await rawCall(t.service.url, { target: 'TrentService.DescribeKey', body: '{"KeyId":' });
    expect(bad.status).toBe(400);
    expect(bad.json.__type).toBe('SerializationException');
    expect(bad.headers.get('x-amzn-requestid')).toBeTruthy();

    const unknown = await rawCall(t.service.url, { target: 'TrentService.MakeCoffee' });
    expect(unknown.status).toBe(400);
    expect(unknown.json.__type).toBe('UnknownOperationException');

    const other = await rawCall(t.service.url, { target: 'DynamoDB_20120810.ListTables' });
    expect(other.json.__type).toBe('UnknownOperationException');

    const none = await rawCall(t.service.url, { target: null });
    expect(none.json.__type).toBe('UnknownOperationException');

    const wrongType = await rawCall(t.service.url, { target: 'TrentService.DescribeKey', body: '{"KeyId":5}' });
    expect(wrongType.status).toBe(400);
    expect(wrongType.json.__type).toBe('SerializationException');

    const array = await rawCall(t.service.url, { target: 'TrentService.ListKeys', body: '[]' });
    expect(array.json.__type).toBe('SerializationException');

    const missing = await rawCall(t.service.url, { target: 'TrentService.DescribeKey', body: '{}' });
    expect(missing.json).toEqual({ __type: 'ValidationException', message: expect.stringContaining("Value null at 'keyId' failed to satisfy constraint: Member must not be null") });
  });

  it('answers UnsupportedOperationException for model operations it does not serve', async () => {
    const err = await errorOf(t.client.send(new CreateCustomKeyStoreCommand({ CustomKeyStoreName: 'x' })));
    expect(err).toMatchObject({ name: 'UnsupportedOperationException', status: 400 });
    expect((await errorOf(t.client.send(new DeleteCustomKeyStoreCommand({ CustomKeyStoreId: 'cks-1234567890abcdef0' })))).name).toBe('UnsupportedOperationException');
  });

  it('serves GET /healthz without authentication', async () => {
    const res = await fetch(`${t.service.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });
});

describe('SigV4', () => {
  it('rejects missing, malformed, unknown, wrongly signed and stale requests with AWS error names', async () => {
    const unsigned = await rawCall(t.service.url, { sign: false });
    expect(unsigned.json.__type).toBe('MissingAuthenticationTokenException');

    const garbage = await rawCall(t.service.url, { sign: false, extraHeaders: { authorization: 'AWS4-HMAC-SHA256 nonsense' } });
    expect(garbage.json.__type).toBe('IncompleteSignatureException');
    expect(garbage.status).toBe(400);

    const unknown = await rawCall(t.service.url, { credentials: { accessKeyId: 'AKIANOBODY0000000000', secretAccessKey: 'whatever-secret-123456' } });
    expect(unknown.json.__type).toBe('UnrecognizedClientException');

    const wrongSecret = await rawCall(t.service.url, { credentials: { accessKeyId: ALICE.accessKeyId, secretAccessKey: 'not-alices-secret-000000000' } });
    expect(wrongSecret.json.__type).toBe('InvalidSignatureException');
    expect(JSON.stringify(wrongSecret.json)).not.toContain('not-alices-secret');

    const stale = await rawCall(t.service.url, { signingDate: new Date(Date.now() - 10 * 60_000) });
    expect(stale.json.__type).toBe('InvalidSignatureException');
    expect(stale.json.message).toMatch(/Signature expired/);
  });

  it('rejects the SDK with a wrong secret', async () => {
    const client = t.clientFor({ accessKeyId: ALICE.accessKeyId, secretAccessKey: 'wrong-secret-0000000000000000' });
    expect((await errorOf(client.send(new ListKeysCommand({})))).name).toBe('InvalidSignatureException');
  });
});

describe('authorization until policies land', () => {
  it('lets the account root do everything and denies other principals by default', async () => {
    await t.client.send(new ListKeysCommand({}));
    const alice = t.clientFor(ALICE);
    const denied = await errorOf(alice.send(new CreateKeyCommand({})));
    expect(denied.name).toBe('AccessDeniedException');
    expect(denied.message).toContain(`arn:aws:iam::${ACCOUNT_ID}:user/alice`);
    expect(denied.message).toContain('kms:CreateKey');
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const { DescribeKeyCommand } = await import('@aws-sdk/client-kms');
    const onKey = await errorOf(alice.send(new DescribeKeyCommand({ KeyId: key.KeyId })));
    expect(onKey.name).toBe('AccessDeniedException');
    expect(onKey.message).toContain(key.Arn!);
  });
});
