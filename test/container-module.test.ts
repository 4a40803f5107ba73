/**
 * The testcontainers module users import (`p11kms/testcontainers`): a seed file and a principals
 * file go into the container, the given root credentials work, and the seeded key and principal
 * behave as they do under `npm start`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DescribeKeyCommand, EncryptCommand, ListAliasesCommand } from '@aws-sdk/client-kms';
import { P11kmsContainer, randomRootCredentials, type StartedP11kmsContainer } from 'p11kms/testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, kmsClient, reportSkippedWithoutDocker } from './helpers/container.js';
import { credentials, identityPolicy, testUser, writePrincipalsFile } from './helpers/principals.js';
import { tempDir } from './helpers/service.js';

const SEEDED_KEY_ID = '0b5e7c3a-1f2d-4e6a-9c8b-7d6e5f4a3b2c';

reportSkippedWithoutDocker();

describe.runIf(docker.ready)('P11kmsContainer with a seed file, a principals file and chosen root credentials', () => {
  const root = randomRootCredentials();
  const auditor = testUser('auditor', [identityPolicy({ Effect: 'Allow', Action: ['kms:DescribeKey', 'kms:ListAliases'], Resource: '*' })]);
  let kms: StartedP11kmsContainer;

  beforeAll(async () => {
    const seedFile = path.join(tempDir('p11kms-seed-'), 'seed.yaml');
    fs.writeFileSync(seedFile, ['keys:', `  - keyId: ${SEEDED_KEY_ID}`, '    description: seeded for CI', '    aliases: [alias/ci]', '    tags: { env: ci }', ''].join('\n'));
    kms = await new P11kmsContainer()
      .withNetworkMode('host')
      .withSeedFile(seedFile)
      .withPrincipalsFile(writePrincipalsFile([auditor]))
      .withRootCredentials(root)
      .start();
  });
  afterAll(async () => {
    await kms?.stop();
  });

  it('hands back an endpoint on loopback and the root credentials it was given', () => {
    expect(kms.getEndpoint()).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(kms.getRootCredentials()).toEqual(root);
    expect(kms.getRegion()).toBe('us-east-1');
    expect(kms.getAccountId()).toBe('111122223333');
  });

  it('serves the seeded key under its fixed ID and alias', async () => {
    const { KeyMetadata } = await kmsClient(kms).send(new DescribeKeyCommand({ KeyId: 'alias/ci' }));
    expect(KeyMetadata).toMatchObject({ KeyId: SEEDED_KEY_ID, Description: 'seeded for CI', KeyState: 'Enabled' });
    const { CiphertextBlob } = await kmsClient(kms).send(new EncryptCommand({ KeyId: 'alias/ci', Plaintext: Buffer.from('ci') }));
    expect(CiphertextBlob?.length).toBeGreaterThan(2);
  });

  it('authorizes the principals file\'s user by its identity policy', async () => {
    const asAuditor = kmsClient(kms, credentials(auditor));
    const { KeyMetadata } = await asAuditor.send(new DescribeKeyCommand({ KeyId: SEEDED_KEY_ID }));
    expect(KeyMetadata?.KeyId).toBe(SEEDED_KEY_ID);
    const { Aliases } = await asAuditor.send(new ListAliasesCommand({ KeyId: SEEDED_KEY_ID }));
    expect(Aliases?.map((a) => a.AliasName)).toEqual(['alias/ci']);
    await expect(asAuditor.send(new EncryptCommand({ KeyId: SEEDED_KEY_ID, Plaintext: Buffer.from('x') }))).rejects.toMatchObject({ name: 'AccessDeniedException' });
  });

  it('refuses an unknown access key', async () => {
    const stranger = kmsClient(kms, randomRootCredentials());
    await expect(stranger.send(new DescribeKeyCommand({ KeyId: SEEDED_KEY_ID }))).rejects.toMatchObject({ name: 'UnrecognizedClientException' });
  });
});
