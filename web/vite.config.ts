/** Vite: the production bundle into dist/ (served by the controller at /), and a dev server proxying /graphql. */
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// a config file is the one place a default export is required (Vite loads it so)
export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false, target: 'es2022' },
  server: { proxy: { '/graphql': { target: 'http://127.0.0.1:4000', ws: true } } },
});
