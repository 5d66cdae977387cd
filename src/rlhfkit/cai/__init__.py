"""Constitutional AI (Bai et al. 2022): principles instead of armies of labelers.

- `constitution`: load and validate the TOML file of principles (critique request, revision request,
  comparison question); the documented default ships as `default_constitution.toml`.
- `prompts`: the exact text of every request (critique, revision, multiple-choice comparison).
- `revise` (SL-CAI): sample, critique, revise N times; the final revisions become SFT chats, the chains
  are kept for audit.
- `label` + `labelers` (RL-CAI): an AI labeler (local checkpoint or OpenAI-compatible endpoint) answers each
  principle's multiple-choice question in both orders; normalized "(A)"/"(B)" probabilities, averaged, are
  the soft `label` of a pairwise comparison the reward model trains on.
- `world_data`: demo-world demonstrations of critiques, revisions and judgments for a tiny model.
- `world_eval`: gold-judge measurements of revisions and AI labels in the demo world.
"""
