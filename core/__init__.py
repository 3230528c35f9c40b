"""Small pieces shared by agents/, actors/ and training/: config loading, local Ray start-up."""
