/** `p11kms serve`: the service in the foreground, configured by environment variables. */
export async function run(): Promise<number> {
  await import('../main.js');
  return 0;
}
