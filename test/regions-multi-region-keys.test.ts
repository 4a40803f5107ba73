/** Multi-Region keys on the embedded SQLite store (the suite: test/multi-region/suite.ts). */
import { describeMultiRegionKeys } from './multi-region/suite.js';

describeMultiRegionKeys('SQLite', async () => ({}));
