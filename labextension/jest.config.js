// The model and the API client are plain TypeScript: ts-jest compiles them, no JupyterLab
// bundle is loaded (the API client's ServerConnection is given a mocked fetch).
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  testRegex: 'src/__tests__/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: { jsx: 'react', esModuleInterop: true, strict: true, types: ['jest'] }, isolatedModules: true }]
  }
};
