-- The 19.09 manager's additions to domains and groups: the virtual-folder hosts their
-- members may use (added to what the keypair's resource policy allows) and, for domains,
-- the Docker registries their members may use. JSON arrays of names.
ALTER TABLE domains ADD COLUMN allowed_vfolder_hosts TEXT NOT NULL DEFAULT '[]'
    CHECK (json_valid(allowed_vfolder_hosts) AND json_type(allowed_vfolder_hosts) = 'array');
ALTER TABLE domains ADD COLUMN allowed_docker_registries TEXT NOT NULL DEFAULT '[]'
    CHECK (json_valid(allowed_docker_registries) AND json_type(allowed_docker_registries) = 'array');
ALTER TABLE groups ADD COLUMN allowed_vfolder_hosts TEXT NOT NULL DEFAULT '[]'
    CHECK (json_valid(allowed_vfolder_hosts) AND json_type(allowed_vfolder_hosts) = 'array');
