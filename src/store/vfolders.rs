//! Virtual-folder rows as the admin API lists them.

use super::{Store, StoreError};
use rusqlite::Row;

#[derive(Debug, Clone)]
pub struct VFolderRow {
    pub id: String,
    pub host: String,
    pub name: String,
    pub max_files: i64,
    pub max_size: i64,
    pub num_files: i64,
    pub cur_size: i64,
    pub created_at: String,
    pub last_used: Option<String>,
}

fn vfolder_row(r: &Row<'_>) -> rusqlite::Result<VFolderRow> {
    Ok(VFolderRow {
        id: r.get("id")?,
        host: r.get("host")?,
        name: r.get("name")?,
        max_files: r.get("max_files")?,
        max_size: r.get("max_size")?,
        num_files: r.get("num_files")?,
        cur_size: r.get("cur_size")?,
        created_at: r.get("created_at")?,
        last_used: r.get("last_used")?,
    })
}

impl Store {
    /// Folders a user owns, is shared, or reaches through a group.
    pub async fn vfolders_of_user(&self, user_uuid: &str) -> Result<Vec<VFolderRow>, StoreError> {
        let uuid = user_uuid.to_owned();
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT v.* FROM vfolders v WHERE v.\"user\" = ?1
                    OR v.id IN (SELECT vfolder FROM vfolder_permissions WHERE \"user\" = ?1)
                    OR v.\"group\" IN (SELECT group_id FROM association_groups_users WHERE user_id = ?1)
                 ORDER BY v.name LIMIT 1000",
            )?;
            let rows = st.query_map([uuid], vfolder_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}

/// A folder as one user reaches it: owned, shared with them, or through a group.
#[derive(Debug, Clone)]
pub struct Accessible {
    pub row: VFolderRow,
    pub user: Option<String>,
    pub group: Option<String>,
    pub is_owner: bool,
    /// `ro`, `rw` or `wd`.
    pub permission: String,
}

impl Accessible {
    pub fn kind(&self) -> &'static str {
        if self.group.is_some() {
            "group"
        } else {
            "user"
        }
    }

    /// Whether `needed` (`ro` ⊂ `rw` ⊂ `wd`) is granted.
    pub fn allows(&self, needed: &str) -> bool {
        let rank = |p: &str| match p {
            "ro" => 1,
            "rw" => 2,
            "wd" => 3,
            _ => 0,
        };
        rank(&self.permission) >= rank(needed)
    }
}

/// A pending invitation.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub id: String,
    pub inviter: String,
    pub invitee: String,
    pub permission: String,
    pub state: String,
    pub created_at: String,
    pub vfolder: String,
}

fn invitation_row(r: &Row<'_>) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        id: r.get("id")?,
        inviter: r.get::<_, Option<String>>("inviter")?.unwrap_or_default(),
        invitee: r.get("invitee")?,
        permission: r.get("permission")?,
        state: r.get("state")?,
        created_at: r.get("created_at")?,
        vfolder: r.get("vfolder")?,
    })
}

/// What a new folder needs.
pub struct NewVFolder {
    pub id: String,
    pub host: String,
    pub name: String,
    pub user: Option<String>,
    pub group: Option<String>,
}

/// Why a folder change was refused.
#[derive(Debug)]
pub enum VFolderRefusal {
    TooMany,
    NameTaken,
}

/// Owned folders (`wd`), folders shared with the user (their permission), and folders of the
/// user's groups (`wd` for group admins, `rw` otherwise); superadmins with `all` see every
/// folder as owners.
const ACCESSIBLE: &str = "
    SELECT v.*, v.\"user\" AS owner_user, v.\"group\" AS owner_group, 1 AS is_owner, 'wd' AS perm
      FROM vfolders v WHERE v.\"user\" = ?1
    UNION ALL
    SELECT v.*, v.\"user\", v.\"group\", 0, p.permission
      FROM vfolders v JOIN vfolder_permissions p ON p.vfolder = v.id WHERE p.\"user\" = ?1
    UNION ALL
    SELECT v.*, v.\"user\", v.\"group\", ?2, CASE WHEN ?2 THEN 'wd' ELSE 'rw' END
      FROM vfolders v WHERE v.\"group\" IN (SELECT group_id FROM association_groups_users WHERE user_id = ?1)";

/// Whether `me` already reaches a folder named `name` (on `host`, when given).
fn name_reachable(
    tx: &rusqlite::Connection,
    me: &str,
    name: &str,
    host: Option<&str>,
) -> Result<bool, StoreError> {
    let n: i64 = tx.query_row(
        &format!(
            "SELECT count(*) FROM ({ACCESSIBLE}) WHERE name = ?3 AND (?4 IS NULL OR host = ?4)"
        ),
        rusqlite::params![me, false, name, host],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

fn accessible_row(r: &Row<'_>) -> rusqlite::Result<Accessible> {
    Ok(Accessible {
        row: vfolder_row(r)?,
        user: r.get("owner_user")?,
        group: r.get("owner_group")?,
        is_owner: r.get("is_owner")?,
        permission: r.get("perm")?,
    })
}

impl Store {
    /// Every folder `user_uuid` can reach (`group_admin`: the user administers its groups'
    /// folders), ordered by name; with `all`, every folder there is.
    pub async fn accessible_vfolders(
        &self,
        user_uuid: &str,
        group_admin: bool,
        all: bool,
    ) -> Result<Vec<Accessible>, StoreError> {
        let uuid = user_uuid.to_owned();
        self.read(move |c| {
            let sql = if all {
                "SELECT v.*, v.\"user\" AS owner_user, v.\"group\" AS owner_group, 1 AS is_owner, 'wd' AS perm
                 FROM vfolders v ORDER BY v.name LIMIT 10000"
                    .to_owned()
            } else {
                format!("SELECT * FROM ({ACCESSIBLE}) ORDER BY name LIMIT 10000")
            };
            let mut st = c.prepare_cached(&sql)?;
            let rows = if all {
                st.query_map([], accessible_row)?.collect::<Result<Vec<_>, _>>()?
            } else {
                st.query_map(rusqlite::params![uuid, group_admin], accessible_row)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            // A folder reached twice (owned and through a group) counts once, as its owner.
            let mut out: Vec<Accessible> = Vec::new();
            for a in rows {
                match out.iter_mut().find(|o| o.row.id == a.row.id) {
                    Some(o) if a.is_owner && !o.is_owner => *o = a,
                    Some(_) => {}
                    None => out.push(a),
                }
            }
            Ok(out)
        })
        .await
    }

    /// Creates a folder row after checking the owner's folder count and that no reachable
    /// folder on the host has the name.
    pub async fn create_vfolder(
        &self,
        new: NewVFolder,
        max_count: i64,
        reachable_by: &str,
    ) -> Result<Result<VFolderRow, VFolderRefusal>, StoreError> {
        let me = reachable_by.to_owned();
        self.write(move |tx| {
            if let Some(owner) = &new.user {
                let owned: i64 = tx.query_row(
                    "SELECT count(*) FROM vfolders WHERE \"user\" = ?1",
                    [owner],
                    |r| r.get(0),
                )?;
                if max_count > 0 && owned >= max_count {
                    return Ok(Err(VFolderRefusal::TooMany));
                }
            }
            let taken = name_reachable(tx, &me, &new.name, Some(&new.host))?;
            let group_taken: i64 = match &new.group {
                Some(g) => tx.query_row(
                    "SELECT count(*) FROM vfolders WHERE \"group\" = ?1 AND name = ?2 AND host = ?3",
                    rusqlite::params![g, new.name, new.host],
                    |r| r.get(0),
                )?,
                None => 0,
            };
            if taken || group_taken > 0 {
                return Ok(Err(VFolderRefusal::NameTaken));
            }
            tx.execute(
                "INSERT INTO vfolders (id, host, name, \"user\", \"group\") VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![new.id, new.host, new.name, new.user, new.group],
            )?;
            let row = tx.query_row("SELECT * FROM vfolders WHERE id = ?1", [&new.id], vfolder_row)?;
            Ok(Ok(row))
        })
        .await
    }

    /// Renames a folder unless a folder reachable by `me` already has the name.
    pub async fn rename_vfolder(
        &self,
        id: &str,
        new_name: &str,
        me: &str,
    ) -> Result<Result<(), VFolderRefusal>, StoreError> {
        let (id, name, me) = (id.to_owned(), new_name.to_owned(), me.to_owned());
        self.write(move |tx| {
            if name_reachable(tx, &me, &name, None)? {
                return Ok(Err(VFolderRefusal::NameTaken));
            }
            tx.execute("UPDATE vfolders SET name = ?2 WHERE id = ?1", [&id, &name])?;
            Ok(Ok(()))
        })
        .await
    }

    pub async fn delete_vfolder(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM vfolders WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    pub async fn touch_vfolder(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE vfolders SET last_used = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
        .await
    }

    /// Invites users (by e-mail, those with a keypair, not the inviter, not already
    /// invited); returns who was invited.
    pub async fn invite(
        &self,
        vfolder: &str,
        inviter: &str,
        emails: Vec<String>,
        permission: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (vfolder, inviter, perm) = (
            vfolder.to_owned(),
            inviter.to_owned(),
            permission.to_owned(),
        );
        self.write(move |tx| {
            let mut invited = Vec::new();
            for email in emails {
                if email == inviter || invited.contains(&email) {
                    continue;
                }
                let known: i64 = tx.query_row(
                    "SELECT count(*) FROM keypairs WHERE user_id = ?1",
                    [&email],
                    |r| r.get(0),
                )?;
                let pending: i64 = tx.query_row(
                    "SELECT count(*) FROM vfolder_invitations WHERE vfolder = ?1 AND inviter = ?2
                        AND invitee = ?3 AND state = 'pending'",
                    [&vfolder, &inviter, &email],
                    |r| r.get(0),
                )?;
                if known == 0 || pending > 0 {
                    continue;
                }
                tx.execute(
                    "INSERT INTO vfolder_invitations (id, permission, inviter, invitee, vfolder)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![
                        uuid::Uuid::new_v4().to_string(),
                        perm,
                        inviter,
                        email,
                        vfolder
                    ],
                )?;
                invited.push(email);
            }
            Ok(invited)
        })
        .await
    }

    pub async fn pending_invitations(&self, invitee: &str) -> Result<Vec<Invitation>, StoreError> {
        let invitee = invitee.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT * FROM vfolder_invitations WHERE invitee = ?1 AND state = 'pending' ORDER BY created_at",
            )?;
            let rows = st.query_map([invitee], invitation_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn invitation(&self, id: &str) -> Result<Option<Invitation>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            Ok(c.query_row(
                "SELECT * FROM vfolder_invitations WHERE id = ?1",
                [id],
                invitation_row,
            )
            .optional()?)
        })
        .await
    }

    /// Accepts a pending invitation for `user_uuid`: the folder is shared with the
    /// invitation's permission. Refused when the user already reaches a folder of that name.
    pub async fn accept_invitation(
        &self,
        inv: &Invitation,
        user_uuid: &str,
    ) -> Result<Result<(), VFolderRefusal>, StoreError> {
        let (inv, me) = (inv.clone(), user_uuid.to_owned());
        self.write(move |tx| {
            let name: String = tx.query_row(
                "SELECT name FROM vfolders WHERE id = ?1",
                [&inv.vfolder],
                |r| r.get(0),
            )?;
            if name_reachable(tx, &me, &name, None)? {
                return Ok(Err(VFolderRefusal::NameTaken));
            }
            tx.execute(
                "INSERT INTO vfolder_permissions (permission, vfolder, \"user\") VALUES (?1, ?2, ?3)
                 ON CONFLICT (vfolder, \"user\") DO UPDATE SET permission = excluded.permission",
                rusqlite::params![inv.permission, inv.vfolder, me],
            )?;
            tx.execute(
                "UPDATE vfolder_invitations SET state = 'accepted' WHERE id = ?1",
                [&inv.id],
            )?;
            Ok(Ok(()))
        })
        .await
    }

    pub async fn reject_invitation(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE vfolder_invitations SET state = 'rejected' WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
        .await
    }
}
